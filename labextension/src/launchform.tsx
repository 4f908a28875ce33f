/**
 * One catalog model with its Launch button and resource fields. Fields are checked as typed
 * (validate.ts); the server's refusal (site limit, Slurm down...) is shown next to the field it
 * names and as a JupyterLab notification with the server's message.
 */
import { Notification } from '@jupyterlab/apputils';
import * as React from 'react';

import { ApiError, ICatalogModel, Resources } from './api';
import { EstimateLine, useEstimate } from './estimateview';
import { OsireModel } from './model';
import { refusedForSize, sizeLine } from './sizes';
import {
  FIELDS,
  FieldKey,
  FormErrors,
  FormValues,
  buildLaunchRequest,
  fieldOfParam,
  initialValues,
  validateForm
} from './validate';

export function LaunchForm(props: {
  entry: ICatalogModel;
  model: OsireModel;
}): JSX.Element {
  const { entry, model } = props;
  const defaults = entry.resources ?? {};
  const [values, setValues] = React.useState<FormValues>(() => initialValues(defaults));
  const [open, setOpen] = React.useState(model.settings.resourcesView === 'expanded');
  const [busy, setBusy] = React.useState(false);
  const [serverError, setServerError] = React.useState<ApiError | null>(null);
  const [touched, setTouched] = React.useState<Partial<Record<FieldKey, boolean>>>({});
  const id = domId(entry.name);

  const localErrors = validateForm(values);
  const serverField = serverError ? fieldOfParam(serverError.param) : null;
  // While the resources are open, the estimate follows the fields (none while one is invalid).
  const estimate = useEstimate(
    model.api,
    buildLaunchRequest(entry.name, values, defaults).request,
    open
  );
  const estimateField =
    estimate.error && estimate.current ? fieldOfParam(estimate.error.param) : null;
  const fieldError = (key: FieldKey): string | null =>
    (touched[key] && localErrors[key]) ||
    (serverField === key && serverError ? serverError.message : null) ||
    (estimateField === key && estimate.error ? estimate.error.message : null);
  const generalError = serverError && !serverField ? serverError.message : null;

  const launch = async (force = false): Promise<void> => {
    const { request, errors } = buildLaunchRequest(entry.name, values, defaults);
    if (!request) {
      setTouched(Object.fromEntries(Object.keys(errors).map(k => [k, true])));
      setOpen(true);
      focusFirstError(id, errors);
      return;
    }
    setBusy(true);
    setServerError(null);
    try {
      await model.launch(force ? { ...request, force: true } : request);
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(String(e), 0);
      setServerError(err);
      Notification.error(`Launch of ${entry.name} refused: ${err.message}`, {
        autoClose: 8000
      });
      if (fieldOfParam(err.param)) {
        setOpen(true);
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <li className="jp-OsireSidebar-card jp-OsireSidebar-model" data-model={entry.name}>
      <div className="jp-OsireSidebar-row">
        <div className="jp-OsireSidebar-main">
          <div className="jp-OsireSidebar-name" title={entry.model}>
            {entry.name}
          </div>
          {entry.description && (
            <div className="jp-OsireSidebar-description">{entry.description}</div>
          )}
          <div className="jp-OsireSidebar-meta">{summarize(defaults, entry.engine)}</div>
          {sizeLine(entry.size) && (
            <div className="jp-OsireSidebar-size" title={entry.size?.note || entry.model}>
              {sizeLine(entry.size)}
            </div>
          )}
        </div>
        <button
          type="button"
          className="jp-OsireSidebar-button jp-mod-accept"
          aria-label={`Launch ${entry.name}`}
          disabled={busy}
          onClick={() => void launch()}
        >
          {busy ? 'Launching…' : 'Launch'}
        </button>
      </div>
      <details
        className="jp-OsireSidebar-resources"
        open={open}
        onToggle={e => setOpen((e.currentTarget as HTMLDetailsElement).open)}
      >
        <summary>Resources</summary>
        <div className="jp-OsireSidebar-fields">
          {FIELDS.map(f => {
            const ferr = fieldError(f.key);
            const inputId = `${id}-${f.key}`;
            return (
              <div className="jp-OsireSidebar-field" key={f.key}>
                <label htmlFor={inputId}>{f.label}</label>
                <input
                  id={inputId}
                  className={`jp-OsireSidebar-input${ferr ? ' jp-mod-invalid' : ''}`}
                  type={f.numeric ? 'number' : 'text'}
                  min={f.numeric ? (f.key === 'replicas' ? 1 : 0) : undefined}
                  name={f.key}
                  placeholder={defaults[f.key] == null ? f.hint : undefined}
                  title={f.hint}
                  value={values[f.key]}
                  aria-invalid={ferr ? true : undefined}
                  aria-describedby={ferr ? `${inputId}-error` : undefined}
                  onChange={e => {
                    const value = e.currentTarget.value;
                    setValues(v => ({ ...v, [f.key]: value }));
                    if (serverField === f.key || (serverError && !serverField)) {
                      setServerError(null);
                    }
                  }}
                  onBlur={() => setTouched(t => ({ ...t, [f.key]: true }))}
                  onKeyDown={e => {
                    if (e.key === 'Enter') {
                      void launch();
                    }
                  }}
                />
                {ferr && (
                  <div
                    id={`${inputId}-error`}
                    className="jp-OsireSidebar-fieldError"
                    role="alert"
                  >
                    {ferr}
                  </div>
                )}
              </div>
            );
          })}
        </div>
      </details>
      {open && <EstimateLine state={estimate} fieldError={estimateField !== null} />}
      {generalError && (
        <div className="jp-OsireSidebar-error" role="alert">
          {generalError}
        </div>
      )}
      {serverError && refusedForSize(serverError.param, serverError.message) && (
        <button
          type="button"
          className="jp-OsireSidebar-button jp-OsireSidebar-force"
          disabled={busy}
          onClick={() => void launch(true)}
        >
          Launch anyway
        </button>
      )}
    </li>
  );
}

function focusFirstError(id: string, errors: FormErrors): void {
  const first = FIELDS.find(f => errors[f.key]);
  if (first) {
    window.requestAnimationFrame(() =>
      (document.getElementById(`${id}-${first.key}`) as HTMLInputElement | null)?.focus()
    );
  }
}

function summarize(res: Resources, engine: string): string {
  const parts: string[] = [];
  if (res.gpus) {
    parts.push(`${res.gpus} GPU${res.gpus === 1 ? '' : 's'}${res.gpu_type ? ` (${res.gpu_type})` : ''}`);
  } else {
    parts.push('no GPU');
  }
  if (res.cpus != null) {
    parts.push(`${res.cpus} CPU${res.cpus === 1 ? '' : 's'}`);
  }
  if (res.memory) {
    parts.push(String(res.memory));
  }
  if (res.time) {
    parts.push(String(res.time));
  }
  if (res.partition) {
    parts.push(String(res.partition));
  }
  parts.push(engine);
  return parts.join(' · ');
}

export function domId(name: string): string {
  return `osire-${name.replace(/[^A-Za-z0-9_-]/g, '_')}`;
}
