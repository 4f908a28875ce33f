/**
 * The playground's model: the conversation and the settings of one playground, and the streamed
 * call to `<base>/osire/v1/chat/completions` that fills each answer in as it arrives (no React;
 * the stream's parsing is in chat.ts).
 */
import { Notification } from '@jupyterlab/apputils';
import { ISignal, Signal } from '@lumino/signaling';

import { ApiError, IDeployment } from './api';
import {
  IChatMessage,
  SseParser,
  StreamStats,
  chatRequestBody,
  readChunk
} from './chat';
import { OsireModel } from './model';

export interface ITurn extends IChatMessage {
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
