/**
 * The launch form's fields, checked in the browser with the server's own rules (spec.py) so a
 * typo is shown next to its field before anything is sent. The server still decides: site
 * limits (max GPUs, allowed partitions...) come back as errors naming the field.
 *
 * Pure (type imports only): test/validate.test.mjs.
 */
import type { ILaunchRequest, Resources } from './types';

export type FieldKey = 'gpus' | 'memory' | 'time' | 'partition' | 'account' | 'replicas';

export interface IField {
  key: FieldKey;
  label: string;
  hint: string;
  /** Where the server names it in an error's `param`. */
  param: string;
  numeric?: boolean;
}

export const FIELDS: IField[] = [
  { key: 'gpus', label: 'GPUs', hint: 'per replica', param: 'resources.gpus', numeric: true },
  { key: 'memory', label: 'Memory', hint: 'e.g. 64G', param: 'resources.memory' },
  { key: 'time', label: 'Time', hint: 'HH:MM:SS or D-HH:MM:SS', param: 'resources.time' },
  { key: 'partition', label: 'Partition', hint: 'Slurm partition', param: 'resources.partition' },
  { key: 'account', label: 'Account', hint: 'Slurm account', param: 'resources.account' },
  { key: 'replicas', label: 'Replicas', hint: 'copies of the model', param: 'replicas', numeric: true }
];

export type FormValues = Record<FieldKey, string>;
export type FormErrors = Partial<Record<FieldKey, string>>;

const NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const MEMORY = /^[1-9][0-9]{0,8}[KMGT]?$/;
const TIME = /^(?:(\d{1,3})-)?(\d{1,4})(?::(\d{1,2}))?(?::(\d{1,2}))?$/;

/** Slurm time syntax (M, M:S, H:M:S, D-H, D-H:M, D-H:M:S) in minutes (rounded up); null if not. */
export function slurmMinutes(value: string): number | null {
  const m = TIME.exec(value.trim());
  if (!m) {
    return null;
  }
  const [, days, a, b, c] = m;
  const n = (x: string | undefined): number => (x === undefined ? 0 : Number(x));
  let total: number;
  let seconds: number;
  if (days !== undefined) {
    total = n(days) * 1440 + n(a) * 60 + n(b);
    seconds = n(c);
  } else if (c !== undefined) {
    total = n(a) * 60 + n(b);
    seconds = n(c);
  } else if (b !== undefined) {
    total = n(a);
    seconds = n(b);
  } else {
    total = n(a);
    seconds = 0;
  }
  return total + (seconds ? 1 : 0);
}

/** The form's initial values from a catalog entry's resources (replicas: 1). */
export function initialValues(resources: Resources): FormValues {
  const value = (key: string): string =>
    resources[key] != null && resources[key] !== '' ? String(resources[key]) : '';
  return {
    gpus: value('gpus'),
    memory: value('memory'),
    time: value('time'),
    partition: value('partition'),
    account: value('account'),
    replicas: '1'
  };
}

/** One message per field that cannot be right; empty fields mean "the catalog's default". */
export function validateForm(values: FormValues): FormErrors {
  const errors: FormErrors = {};
  const v = (key: FieldKey): string => (values[key] ?? '').trim();
  const integer = (key: FieldKey, low: number, high: number, what: string): void => {
    const text = v(key);
    if (!text) {
      return;
    }
    if (!/^\d+$/.test(text)) {
      errors[key] = `${what} must be a whole number`;
    } else if (Number(text) < low || Number(text) > high) {
      errors[key] = `${what} must be between ${low} and ${high}`;
    }
  };
  integer('gpus', 0, 1024, 'GPUs');
  integer('replicas', 1, 64, 'Replicas');
  if (v('memory') && !MEMORY.test(v('memory').toUpperCase())) {
    errors.memory = 'a size such as 64G or 4000M';
  }
  if (v('time')) {
    const minutes = slurmMinutes(v('time'));
    if (minutes === null) {
      errors.time = 'minutes, HH:MM:SS or D-HH:MM:SS';
    } else if (minutes < 1) {
      errors.time = 'at least one minute';
    }
  }
  for (const key of ['partition', 'account'] as FieldKey[]) {
    if (v(key) && !NAME.test(v(key))) {
      errors[key] = "letters, digits, '_', '.', '-' (at most 64)";
    }
  }
  return errors;
}

/**
 * The launch request: only the fields the user changed from the catalog's values (the server
 * fills the rest, within the site's limits), or the errors that keep it from being sent.
 */
export function buildLaunchRequest(
  model: string,
  values: FormValues,
  defaults: Resources
): { request: ILaunchRequest | null; errors: FormErrors } {
  const errors = validateForm(values);
  if (Object.keys(errors).length) {
    return { request: null, errors };
  }
  const initial = initialValues(defaults);
  const resources: Resources = {};
  for (const field of FIELDS) {
    if (field.key === 'replicas') {
      continue;
    }
    const value = values[field.key].trim();
    if (value !== '' && value !== initial[field.key]) {
      (resources as Record<string, unknown>)[field.key] = field.numeric
        ? Number(value)
        : field.key === 'memory'
          ? value.toUpperCase()
          : value;
    }
  }
  const request: ILaunchRequest = { model };
  const replicas = values.replicas.trim();
  if (replicas && replicas !== '1') {
    request.replicas = Number(replicas);
  }
  if (Object.keys(resources).length) {
    request.resources = resources;
  }
  return { request, errors };
}

/** The form field a server error's `param` names, if any. */
export function fieldOfParam(param: string | null | undefined): FieldKey | null {
  const field = FIELDS.find(f => f.param === param);
  return field ? field.key : null;
}
