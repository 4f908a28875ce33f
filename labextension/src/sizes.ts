/**
 * A catalog model's size as one line for its card (pure: node tests in test/sizes.test.mjs).
 */
import type { IModelSize } from './types';

/** "135M parameters · 538 MB of weights: 1 x A100 40G · 41k tokens of KV cache". */
export function sizeLine(size: IModelSize | undefined): string {
  if (!size || size.weight_bytes === undefined) {
    return size?.note ? 'size unknown' : '';
  }
  const parts: string[] = [];
  if (size.parameters) {
    parts.push(`${count(size.parameters)} parameters`);
  }
  parts.push(size.summary || `${bytes(size.weight_bytes)} of weights`);
  const first = size.options?.[0];
  if (first?.context_tokens !== undefined) {
    parts.push(`${count(first.context_tokens)} tokens of KV cache`);
  }
  return parts.join(' · ');
}

/** Whether a refused launch was refused for size alone, so that "Launch anyway" may help. */
export function refusedForSize(param: string | null | undefined, message: string): boolean {
  return param === 'resources.gpus' && message.includes('does not fit');
}

function count(n: number): string {
  for (const [unit, scale] of [['B', 1e9], ['M', 1e6], ['k', 1e3]] as const) {
    if (n >= scale) {
      return `${(n / scale).toFixed(n >= 10 * scale ? 0 : 1)}${unit}`;
    }
  }
  return String(n);
}

function bytes(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(1)} GB` : `${Math.round(n / 1e6)} MB`;
}
