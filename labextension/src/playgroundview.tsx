/**
 * What a playground shows: the generation settings, the conversation (answers rendered as inert
 * Markdown), the last answer's figures and the message box. Reads and drives a `PlaygroundModel`.
 */
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { Widget } from '@lumino/widgets';
import * as React from 'react';

import { inertMarkdown, restoreVerbatim } from './chat';
import { ITurn, PlaygroundModel } from './playgroundmodel';

export function PlaygroundView(props: {
  model: PlaygroundModel;
  rendermime: IRenderMimeRegistry;
}): JSX.Element {
  const { model } = props;
  const id = `osire-pg-${model.deploymentId}`;
  const last = [...model.turns].reverse().find(t => t.role === 'assistant');
  const log = React.useRef<HTMLDivElement>(null);
  const stick = React.useRef(true);
  React.useEffect(() => {
    const node = log.current;
    if (node && stick.current) {
      node.scrollTop = node.scrollHeight;
    }
  });
  const state = model.deployment?.state;
  return (
    <div className="jp-OsirePlayground-body" data-streaming={model.streaming}>
      <section className="jp-OsirePlayground-settings" aria-label="Generation settings">
        <div className="jp-OsirePlayground-field jp-mod-wide">
          <label htmlFor={`${id}-system`}>System prompt</label>
          <textarea
            id={`${id}-system`}
            className="jp-OsirePlayground-system"
            rows={2}
            value={model.system}
            onChange={e => model.update({ system: e.currentTarget.value })}
          />
        </div>
        <div className="jp-OsirePlayground-field">
          <label htmlFor={`${id}-temperature`}>Temperature</label>
          <input
            id={`${id}-temperature`}
            className="jp-OsireSidebar-input"
            type="number"
            min={0}
            max={2}
            step={0.1}
            value={model.temperature}
            onChange={e => {
              const v = Number(e.currentTarget.value);
              if (!Number.isNaN(v)) {
                model.update({ temperature: Math.min(2, Math.max(0, v)) });
              }
            }}
          />
        </div>
        <div className="jp-OsirePlayground-field">
          <label htmlFor={`${id}-max-tokens`}>Max tokens</label>
          <input
            id={`${id}-max-tokens`}
            className="jp-OsireSidebar-input"
            type="number"
            min={1}
            max={32768}
            step={1}
            value={model.maxTokens}
            onChange={e => {
              const v = Math.round(Number(e.currentTarget.value));
              if (v >= 1) {
                model.update({ maxTokens: v });
              }
            }}
          />
        </div>
        <div className="jp-OsirePlayground-status" aria-live="polite">
          <span className={`jp-OsireSidebar-badge jp-mod-${state ?? 'stopped'}`}>
            {model.modelName}: {state ?? 'gone'}
          </span>
        </div>
      </section>

      <div
        ref={log}
        className="jp-OsirePlayground-log"
        role="log"
        aria-label={`Conversation with ${model.modelName}`}
        tabIndex={0}
        onScroll={e => {
          const n = e.currentTarget;
          stick.current = n.scrollHeight - n.scrollTop - n.clientHeight < 40;
        }}
      >
        {model.turns.length === 0 && (
          <p className="jp-OsirePlayground-empty">
            Ask {model.modelName} something. The playground calls /osire/v1 like any OpenAI
            client; “Insert” in the sidebar puts the same call into a notebook.
          </p>
        )}
        {model.turns.map((turn, i) => (
          <Turn
            key={i}
            turn={turn}
            rendermime={props.rendermime}
            streaming={model.streaming && i === model.turns.length - 1}
          />
        ))}
      </div>

      <StatsLine turn={last} streaming={model.streaming} />

      <div className="jp-OsirePlayground-compose">
        <label htmlFor={`${id}-input`} className="jp-OsirePlayground-srOnly">
          Message to {model.modelName}
        </label>
        <textarea
          id={`${id}-input`}
          className="jp-OsirePlayground-input"
          rows={3}
          placeholder={
            model.ready
              ? `Message ${model.modelName} (Enter to send, Shift+Enter for a new line)`
              : `${model.modelName} is not ready`
          }
          value={model.draft}
          onChange={e => model.update({ draft: e.currentTarget.value })}
          onKeyDown={e => {
            if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
              e.preventDefault();
              if (model.ready) {
                void model.send();
              }
            }
          }}
        />
        <div className="jp-OsirePlayground-buttons">
          {model.streaming ? (
            <button
              type="button"
              className="jp-OsireSidebar-button jp-mod-warn"
              aria-label="Stop generation"
              title="Stop generation (Escape)"
              onClick={() => model.stop()}
            >
              Stop
            </button>
          ) : (
            <button
              type="button"
              className="jp-OsireSidebar-button jp-mod-accept"
              aria-label="Send"
              title="Send (Enter)"
              disabled={!model.ready || !model.draft.trim()}
              onClick={() => void model.send()}
            >
              Send
            </button>
          )}
          <button
            type="button"
            className="jp-OsireSidebar-button"
            aria-label="Clear the conversation"
            disabled={model.turns.length === 0}
            onClick={() => model.clear()}
          >
            Clear
          </button>
        </div>
      </div>
    </div>
  );
}

function StatsLine(props: { turn: ITurn | undefined; streaming: boolean }): JSX.Element {
  const stats = props.turn?.stats;
  const ttft = stats?.timeToFirstToken ?? null;
  const tps = stats?.tokensPerSecond(props.streaming ? performance.now() : undefined) ?? null;
  return (
    <div
      className="jp-OsirePlayground-stats"
      aria-live="off"
      data-ttft={ttft ?? ''}
      data-tps={tps ?? ''}
      data-tokens={stats?.tokens ?? ''}
    >
      {stats ? (
        <>
          <span title="Time to first token">
            First token: {ttft === null ? '…' : `${ttft.toFixed(2)} s`}
          </span>
          <span title="Generated tokens per second after the first token">
            Speed: {tps === null ? '…' : `${tps.toFixed(1)} tok/s`}
          </span>
          <span>Tokens: {stats.tokens}</span>
          {props.turn?.finish && <span>Finish: {props.turn.finish}</span>}
          {props.turn?.stopped && <span>Stopped</span>}
        </>
      ) : (
        <span>Figures of the last answer appear here.</span>
      )}
    </div>
  );
}

function Turn(props: {
  turn: ITurn;
  rendermime: IRenderMimeRegistry;
  streaming: boolean;
}): JSX.Element {
  const { turn } = props;
  return (
    <div
      className={`jp-OsirePlayground-turn jp-mod-${turn.role}`}
      data-role={turn.role}
      data-done={turn.role === 'assistant' ? String(!props.streaming) : undefined}
    >
      <div className="jp-OsirePlayground-who">{turn.role === 'user' ? 'You' : 'Model'}</div>
      {turn.role === 'user' ? (
        <div className="jp-OsirePlayground-user">{turn.content}</div>
      ) : (
        <>
          {turn.content ? (
            <Markdown text={turn.content} rendermime={props.rendermime} />
          ) : (
            props.streaming && <div className="jp-OsirePlayground-wait">Waiting for the first token…</div>
          )}
          {turn.error && (
            <div className="jp-OsireSidebar-error" role="alert">
              {turn.error}
            </div>
          )}
        </>
      )}
    </div>
  );
}

/**
 * A model's Markdown rendered by JupyterLab's renderer, re-rendered as text streams in. The text
 * is data: it goes through `inertMarkdown` (no HTML, no image of its own ever renders or runs;
 * the renderer's sanitizer is a second wall) and code spans and blocks get their text back.
 */
function Markdown(props: { text: string; rendermime: IRenderMimeRegistry }): JSX.Element {
  const host = React.useRef<HTMLDivElement>(null);
  const renderer = React.useRef<IRenderMime.IRenderer | null>(null);
  const state = React.useRef({ busy: false, pending: null as string | null });

  React.useEffect(() => {
    const r = props.rendermime.createRenderer('text/markdown');
    renderer.current = r;
    Widget.attach(r, host.current!);
    return () => {
      renderer.current = null;
      r.dispose();
    };
  }, []);

  React.useEffect(() => {
    const s = state.current;
    s.pending = props.text;
    if (s.busy) {
      return; // the render in progress picks the newest text up when it ends
    }
    const loop = async (): Promise<void> => {
      s.busy = true;
      while (s.pending !== null && renderer.current) {
        const text = s.pending;
        s.pending = null;
        try {
          await renderer.current.renderModel(
            new MimeModel({ data: { 'text/markdown': inertMarkdown(text) }, trusted: false })
          );
          restoreCode(renderer.current.node);
        } catch {
          break;
        }
      }
      s.busy = false;
    };
    void loop();
  }, [props.text]);

  return <div ref={host} className="jp-OsirePlayground-markdown" />;
}

/** Code shows entities as written: put back what `inertMarkdown` changed, as text. */
function restoreCode(node: HTMLElement): void {
  node.querySelectorAll('code').forEach(code => {
    const shown = code.textContent ?? '';
    const restored = restoreVerbatim(shown);
    if (restored !== shown) {
      code.textContent = restored;
    }
  });
}
