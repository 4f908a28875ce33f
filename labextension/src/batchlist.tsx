/**
 * The sidebar's "Batches" section: the user's offline batches (`/osire/v1/batches`), newest
 * first, each with its status, a progress bar (done/total, failed), Slurm's reason while it
 * waits or why it ended, and Cancel, Resume, Download and Remove (asked first: the results go
 * with it). Shown only when there are batches (or
 * listing them failed: the error stays in this section; the deployments above are unaffected).
 * The words and figures come from batches.ts.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import * as React from 'react';

import { IBatch, OsireApi } from './api';
import {
  batchActions,
  batchProgress,
  batchStatusLabel,
  describeBatch,
  isLiveBatch,
  resultFileName
} from './batches';
import { OsireModel } from './model';
import { explainReason, formatDuration } from './states';

const WORDS = { explainReason, formatDuration };

export function BatchSection(props: { model: OsireModel }): JSX.Element | null {
  const { model } = props;
  const batches = model.batches ?? [];
  if (batches.length === 0 && !model.batchesError) {
    return null;
  }
  return (
    <section
      className="jp-OsireSidebar-section jp-OsireBatches"
      aria-labelledby="osire-batches-h"
    >
      <h3 id="osire-batches-h" className="jp-OsireSidebar-sectionTitle">
        Batches{batches.length > 0 ? ` (${batches.length})` : ''}
      </h3>
      {model.batchesError && (
        <p className="jp-OsireSidebar-error" role="alert">
          Cannot list your batches: {model.batchesError}
        </p>
      )}
      <ul className="jp-OsireSidebar-list" aria-live="polite">
        {batches.map(b => (
          <BatchItem key={b.id} batch={b} model={model} />
        ))}
      </ul>
    </section>
  );
}

function BatchItem(props: { batch: IBatch; model: OsireModel }): JSX.Element {
  const { batch: b, model } = props;
  const pending = model.batchPending.has(b.id);
  const actions = batchActions(b, pending);
  const words = describeBatch(b, Date.now() / 1000, WORDS);
  const [busy, setBusy] = React.useState<string | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const jobs = b.osire?.jobs ?? [];
  const title = [
    `${b.model}: batch ${b.id}`,
    b.osire?.job_id ? `job ${b.osire.job_id}` : null,
    jobs.length > 1 ? `jobs ${jobs.join(', ')}` : null
  ]
    .filter(Boolean)
    .join(' · ');

  const save = async (fileId: string, kind: 'output' | 'errors'): Promise<void> => {
    setBusy(kind);
    setError(null);
    try {
      await downloadFile(model.api, fileId, resultFileName(b, kind));
    } catch (e) {
      setError(`Download failed: ${(e as Error).message}`);
    } finally {
      setBusy(null);
    }
  };

  const remove = async (): Promise<void> => {
    const answer = await showDialog({
      title: 'Remove this batch?',
      body:
        `The ${b.model} batch ${b.id} and its results (answers, errors, log) are deleted ` +
        'on the server. Download what you want to keep first. Its input file stays.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Remove' })]
    });
    if (answer.button.accept) {
      setBusy('remove');
      await model.removeBatch(b.id); // gone from the list, or a notification says why not
      setBusy(null);
    }
  };

  return (
    <li
      className={`jp-OsireSidebar-card jp-OsireBatch jp-mod-${b.status}`}
      data-batch={b.id}
      data-status={b.status}
    >
      <div className="jp-OsireSidebar-row jp-OsireSidebar-titleRow">
        <div className="jp-OsireSidebar-name" title={title}>
          {b.model}
        </div>
        <BatchBadge status={b.status} />
      </div>
      <BatchProgress batch={b} />
      <div className="jp-OsireSidebar-meta">
        <span className="jp-OsireSidebar-detail jp-OsireBatch-summary">{words.summary}</span>
      </div>
      {words.details.length > 0 && (
        <ul className="jp-OsireSidebar-explain">
          {words.details.map((line, i) => (
            <li key={i}>{line}</li>
          ))}
        </ul>
      )}
      {error && (
        <p className="jp-OsireSidebar-error" role="alert">
          {error}
        </p>
      )}
      {(actions.cancel || actions.resume || actions.results || actions.errors || actions.remove ||
        pending) && (
        <div className="jp-OsireSidebar-actions">
          {actions.results && (
            <button
              type="button"
              className="jp-OsireSidebar-button"
              aria-label={`Download the results of the ${b.model} batch`}
              title={`Save the answers so far as ${resultFileName(b, 'output')} (JSON lines)`}
              disabled={busy !== null}
              onClick={() => void save(b.output_file_id!, 'output')}
            >
              {busy === 'output' ? 'Downloading…' : 'Download results'}
            </button>
          )}
          {actions.errors && (
            <button
              type="button"
              className="jp-OsireSidebar-button"
              aria-label={`Download the failed requests of the ${b.model} batch`}
              title={`Save the requests the engine refused as ${resultFileName(b, 'errors')}`}
              disabled={busy !== null}
              onClick={() => void save(b.error_file_id!, 'errors')}
            >
              {busy === 'errors' ? 'Downloading…' : 'Errors'}
            </button>
          )}
          {isLiveBatch(b) && (
            <button
              type="button"
              className="jp-OsireSidebar-button jp-mod-warn"
              aria-label={`Cancel the ${b.model} batch`}
              title="End its job; the answers so far are kept and Resume can do the rest"
              disabled={!actions.cancel}
              onClick={() => void model.cancelBatch(b.id)}
            >
              {b.status === 'cancelling' || pending ? 'Cancelling…' : 'Cancel'}
            </button>
          )}
          {(actions.resume || (pending && !isLiveBatch(b))) && (
            <button
              type="button"
              className="jp-OsireSidebar-button jp-mod-accept"
              aria-label={`Resume the ${b.model} batch`}
              title="Submit a new job for the requests that have no answer yet"
              disabled={!actions.resume}
              onClick={() => void model.resumeBatch(b.id)}
            >
              {pending ? 'Resuming…' : 'Resume'}
            </button>
          )}
          {actions.remove && (
            <button
              type="button"
              className="jp-OsireSidebar-button jp-OsireBatch-remove"
              aria-label={`Remove the ${b.model} batch and its results`}
              title="Delete this batch and its results on the server (asks first)"
              disabled={busy !== null}
              onClick={() => void remove()}
            >
              {busy === 'remove' ? 'Removing…' : 'Remove'}
            </button>
          )}
        </div>
      )}
      {b.osire?.log_tail && (b.status === 'failed' || b.status === 'expired') && (
        <details className="jp-OsireSidebar-log">
          <summary>Log tail</summary>
          <pre
            className="jp-OsireSidebar-pre"
            tabIndex={0}
            aria-label={`Log of the ${b.model} batch`}
          >
            {b.osire.log_tail}
          </pre>
        </details>
      )}
    </li>
  );
}

function BatchBadge(props: { status: string }): JSX.Element {
  const moving = ['validating', 'queued', 'in_progress', 'cancelling'].includes(props.status);
  return (
    <span className={`jp-OsireSidebar-badge jp-OsireBatch-badge jp-mod-${props.status}`}>
      {moving && <span className="jp-OsireSidebar-spinner" aria-hidden="true" />}
      {batchStatusLabel(props.status)}
    </span>
  );
}

/** A bar (answered: completed, then failed) with `done/total` and the failed count beside it. */
function BatchProgress(props: { batch: IBatch }): JSX.Element {
  const { batch: b } = props;
  const p = batchProgress(b);
  return (
    <div className="jp-OsireBatch-progress">
      <div
        className="jp-OsireBatch-bar"
        role="progressbar"
        aria-label={`Requests of the ${b.model} batch answered`}
        aria-valuemin={0}
        aria-valuemax={p.total}
        aria-valuenow={p.answered}
        aria-valuetext={p.valueText}
      >
        <span className="jp-OsireBatch-done" style={{ width: `${p.completedPercent}%` }} />
        <span className="jp-OsireBatch-failed" style={{ width: `${p.failedPercent}%` }} />
      </div>
      <span className="jp-OsireBatch-count">{p.text}</span>
      {p.failedText && <span className="jp-OsireBatch-failedCount">{p.failedText}</span>}
    </div>
  );
}

/** Fetch a file through the server (with the Jupyter token) and save it under `name`. */
async function downloadFile(api: OsireApi, fileId: string, name: string): Promise<void> {
  const blob = await api.fileContent(fileId);
  const url = URL.createObjectURL(new Blob([blob], { type: 'application/jsonl' }));
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  link.style.display = 'none';
  document.body.appendChild(link);
  try {
    link.click();
  } finally {
    link.remove();
    // The browser has taken the bytes once the click's download started.
    window.setTimeout(() => URL.revokeObjectURL(url), 30000);
  }
}
