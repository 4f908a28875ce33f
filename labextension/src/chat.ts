/**
 * The playground's streaming logic: server-sent events split from arbitrary network chunks,
 * OpenAI chat chunks read, and the figures (time to first token, tokens per second).
 *
 * Pure (no runtime imports): test/chat.test.mjs.
 */

export interface IChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

export interface IChatOptions {
  model: string;
  system: string;
  temperature: number;
  maxTokens: number;
}

/** The body of a streamed `POST /v1/chat/completions`. */
export function chatRequestBody(options: IChatOptions, history: IChatMessage[]): object {
  const messages: IChatMessage[] = [];
  if (options.system.trim()) {
    messages.push({ role: 'system', content: options.system });
  }
  messages.push(...history.filter(m => m.role !== 'system'));
  return {
    model: options.model,
    messages,
    temperature: options.temperature,
    max_tokens: options.maxTokens,
    stream: true,
    stream_options: { include_usage: true }
  };
}

/**
 * Splits a text/event-stream into the `data` of each event, whatever the chunking of the
 * network: events end with a blank line; `\r\n` and `\r` are line ends too; multi-line data
 * is joined with `\n`; comments (`:`) and other fields are ignored.
 */
export class SseParser {
  /** Feed decoded text; returns the data of each event completed by it. */
  push(text: string): string[] {
    this._buffer += text;
    const events: string[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this._buffer);
      if (!match) {
        break;
      }
      // A lone \r at the very end may be the first half of \r\n: wait for more.
      if (match[0] === '\r' && match.index === this._buffer.length - 1) {
        break;
      }
      const line = this._buffer.slice(0, match.index);
      this._buffer = this._buffer.slice(match.index + match[0].length);
      if (line === '') {
        if (this._data.length) {
          events.push(this._data.join('\n'));
          this._data = [];
        }
      } else if (line.startsWith('data:')) {
        this._data.push(line.slice(line[5] === ' ' ? 6 : 5));
      }
    }
    return events;
  }

  /** The stream ended: an event not closed by a blank line still counts. */
  end(): string[] {
    const events = this.push('\n\n');
    this._buffer = '';
    return events;
  }

  private _buffer = '';
  private _data: string[] = [];
}

export interface IChunk {
  /** Text added to the answer (may be empty). */
  content: string;
  finishReason: string | null;
  /** Completion tokens, from the usage chunk. */
  completionTokens: number | null;
  /** An error sent inside the stream (vLLM's and the proxy's `{"error": {...}}`). */
  error: string | null;
  done: boolean;
}

/** One event's data read as an OpenAI chat chunk. */
export function readChunk(data: string): IChunk {
  const chunk: IChunk = {
    content: '',
    finishReason: null,
    completionTokens: null,
    error: null,
    done: false
  };
  if (data.trim() === '[DONE]') {
    chunk.done = true;
    return chunk;
  }
  let body: any;
  try {
    body = JSON.parse(data);
  } catch {
    chunk.error = `unreadable event from the server: ${data.slice(0, 200)}`;
    return chunk;
  }
  if (body && body.error) {
    chunk.error =
      typeof body.error === 'string' ? body.error : String(body.error.message ?? 'error');
    return chunk;
  }
  const choice = Array.isArray(body?.choices) ? body.choices[0] : undefined;
  if (choice) {
    const delta = choice.delta ?? {};
    chunk.content = typeof delta.content === 'string' ? delta.content : '';
    chunk.finishReason = choice.finish_reason ?? null;
  }
  if (body?.usage && typeof body.usage.completion_tokens === 'number') {
    chunk.completionTokens = body.usage.completion_tokens;
  }
  return chunk;
}

/** Figures of one answer, from timestamps in ms. */
export class StreamStats {
  constructor(readonly startedAt: number) {}

  /** Record a chunk that arrived at `t`. */
  add(t: number, chunk: IChunk): void {
    if (chunk.content) {
      if (this.firstTokenAt === null) {
        this.firstTokenAt = t;
      }
      this.lastTokenAt = t;
      this.contentChunks++;
    }
    if (chunk.completionTokens !== null) {
      this.completionTokens = chunk.completionTokens;
    }
  }

  firstTokenAt: number | null = null;
  lastTokenAt: number | null = null;
  contentChunks = 0;
  completionTokens: number | null = null;

  /** Seconds from sending to the first token. */
  get timeToFirstToken(): number | null {
    return this.firstTokenAt === null ? null : (this.firstTokenAt - this.startedAt) / 1000;
  }

  /** Tokens counted: the usage chunk's figure, else one per content chunk (vLLM sends one each). */
  get tokens(): number {
    return this.completionTokens ?? this.contentChunks;
  }

  /**
   * Generation speed after the first token: (tokens - 1) over the time from the first to the
   * last token (`now` while still streaming). Null until two tokens have come.
   */
  tokensPerSecond(now?: number): number | null {
    if (this.firstTokenAt === null || this.tokens < 2) {
      return null;
    }
    const end = now ?? this.lastTokenAt ?? this.firstTokenAt;
    const seconds = (end - this.firstTokenAt) / 1000;
    return seconds > 0 ? (this.tokens - 1) / seconds : null;
  }
}

/**
 * A model's answer made safe for JupyterLab's Markdown renderer: Markdown stays Markdown, but
 * no markup of the model's own can render or run. Every `<` and `&` becomes an entity (no raw
 * HTML can reach the page, whatever the Markdown parser decides is code) and `![` becomes `&#33;[`
 * (an image would load a URL the model chose, with no click: a link is shown instead).
 */
export function inertMarkdown(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/!\[/g, '&#33;[');
}

const VERBATIM: Record<string, string> = { amp: '&', lt: '<', '#33': '!' };

/**
 * What `inertMarkdown` changed, put back in text the renderer shows verbatim (code spans and
 * blocks show entities as written); to be set as text, never as HTML.
 */
export function restoreVerbatim(text: string): string {
  return text.replace(/&(amp|lt|#33);/g, (_, name: string) => VERBATIM[name]);
}
