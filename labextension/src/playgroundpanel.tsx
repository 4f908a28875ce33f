/**
 * The playground: a main-area tab to chat with one ready deployment. It calls
 * `<base>/osire/v1/chat/completions` as any OpenAI client does (streamed, Jupyter auth), shows
 * the answer as it arrives rendered as Markdown by JupyterLab's own renderer (with no raw HTML
 * or images of the model's: see `inertMarkdown`), and the time to first token and tokens per
 * second. Enter sends, Shift+Enter adds a line, Escape stops.
 */
import { MainAreaWidget, Notification } from '@jupyterlab/apputils';
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { IRenderMime } from '@jupyterlab/rendermime-interfaces';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';
import * as React from 'react';

import { ApiError, IDeployment } from './api';
import {
  IChatMessage,
  SseParser,
  StreamStats,
  chatRequestBody,
  inertMarkdown,
  readChunk,
  restoreVerbatim
} from './chat';
import { osireIcon } from './icon';
import { OsireModel } from './model';

interface ITurn extends IChatMessage {
  /** Set on answers: their figures and how they ended. */
  stats?: StreamStats;
  finish?: string | null;
  error?: string | null;
  stopped?: boolean;
}

/** The conversation and the settings of one playground; emits `changed` on every update. */
export class PlaygroundModel {
  constructor(
    readonly osire: OsireModel,
    readonly deploymentId: string,
    readonly modelName: string
  ) {}

  system = 'You are a helpful assistant.';
  temperature = 0.7;
  maxTokens = 256;
  draft = '';
  turns: ITurn[] = [];
  streaming = false;

  get changed(): ISignal<this, void> {
    return this._changed;
  }

  get deployment(): IDeployment | undefined {
    return (this.osire.deployments ?? []).find(d => d.id === this.deploymentId);
  }

  get ready(): boolean {
    return this.deployment?.state === 'ready';
  }

  update(change: Partial<Pick<PlaygroundModel, 'system' | 'temperature' | 'maxTokens' | 'draft'>>): void {
    Object.assign(this, change);
    this._changed.emit();
  }

  clear(): void {
    this.stop();
    this.turns = [];
    this._changed.emit();
  }

  stop(): void {
    this._controller?.abort();
  }

  /** Send the draft and stream the answer into a new assistant turn. */
  async send(): Promise<void> {
    const text = this.draft.trim();
    if (!text || this.streaming) {
      return;
    }
    const history: IChatMessage[] = this.turns
      .filter(t => !t.error && (t.role === 'user' || t.content))
      .map(t => ({ role: t.role, content: t.content }));
    history.push({ role: 'user', content: text });
    this.turns.push({ role: 'user', content: text });
    const answer: ITurn = { role: 'assistant', content: '', stats: new StreamStats(performance.now()) };
    this.turns.push(answer);
    this.draft = '';
    this.streaming = true;
    const controller = new AbortController();
    this._controller = controller;
    this._changed.emit();
    const stats = answer.stats!;
    const handle = (data: string): boolean => {
      const chunk = readChunk(data);
      stats.add(performance.now(), chunk);
      if (chunk.error) {
        answer.error = chunk.error;
      }
      answer.content += chunk.content;
      answer.finish = chunk.finishReason ?? answer.finish ?? null;
      return chunk.done;
    };
    try {
      const response = await this.osire.api.chatStream(
        chatRequestBody(
          {
            model: this.modelName,
            system: this.system,
            temperature: this.temperature,
            maxTokens: this.maxTokens
          },
          history
        ),
        controller.signal
      );
      const reader = response.body!.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser();
      let done = false;
      while (!done) {
        const { value, done: ended } = await reader.read();
        if (ended) {
          break;
        }
        for (const data of parser.push(decoder.decode(value, { stream: true }))) {
          done = handle(data) || done;
        }
        this._changed.emit();
      }
      for (const data of parser.end()) {
        handle(data);
      }
      if (done) {
        void reader.cancel().catch(() => undefined);
      }
      if (answer.error) {
        Notification.error(`${this.modelName}: ${answer.error}`, { autoClose: 8000 });
      }
    } catch (error) {
      if ((error as Error)?.name === 'AbortError') {
        answer.stopped = true;
      } else {
        answer.error = error instanceof ApiError ? error.message : String(error);
        Notification.error(`Playground (${this.modelName}): ${answer.error}`, {
          autoClose: 8000
        });
      }
    } finally {
      this.streaming = false;
      this._controller = null;
      this._changed.emit();
    }
  }

  dispose(): void {
    this.stop();
    Signal.clearData(this);
  }

  private _changed = new Signal<this, void>(this);
  private _controller: AbortController | null = null;
}

export class PlaygroundPanel extends ReactWidget {
  constructor(
    readonly model: PlaygroundModel,
    private readonly _rendermime: IRenderMimeRegistry
  ) {
    super();
    this.addClass('jp-OsirePlayground');
  }

  dispose(): void {
    this.model.dispose();
    super.dispose();
  }

  /** Put the keyboard in the message box (on open and on activation), once it is rendered. */
  focusInput(tries = 30): void {
    const input = this.node.querySelector<HTMLTextAreaElement>('.jp-OsirePlayground-input');
    if (input) {
      input.focus();
    } else if (tries > 0) {
      window.requestAnimationFrame(() => this.focusInput(tries - 1));
    }
  }

  protected onActivateRequest(msg: Message): void {
    super.onActivateRequest(msg);
    this.focusInput();
  }

  render(): JSX.Element {
    return (
      <UseSignal signal={this.model.osire.changed}>
        {() => (
          <UseSignal signal={this.model.changed}>
            {() => <PlaygroundView model={this.model} rendermime={this._rendermime} />}
          </UseSignal>
        )}
      </UseSignal>
    );
  }
}

/** A main-area tab holding a playground. */
export function createPlayground(
  osire: OsireModel,
  deployment: IDeployment,
  rendermime: IRenderMimeRegistry
): MainAreaWidget<PlaygroundPanel> {
  const content = new PlaygroundPanel(
    new PlaygroundModel(osire, deployment.id, deployment.model),
    rendermime
  );
  const widget = new MainAreaWidget({ content });
  widget.id = `osire-playground-${deployment.id}`;
  widget.title.label = `Playground: ${deployment.model}`;
  widget.title.caption = `Chat with ${deployment.model} (deployment ${deployment.id}) through /osire/v1`;
  widget.title.closable = true;
  widget.title.icon = osireIcon;
  widget.addClass('jp-OsirePlayground-tab');
  return widget;
}

function PlaygroundView(props: {
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
