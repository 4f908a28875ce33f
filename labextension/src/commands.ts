/**
 * The extension's commands (palette category "LLMs"): the sidebar's buttons run them too, so a
 * keyboard user gets everything from the palette. Without an `id` argument a command asks which
 * deployment (or model) it is for.
 */
import { JupyterFrontEnd } from '@jupyterlab/application';
import {
  Clipboard,
  ICommandPalette,
  InputDialog,
  MainAreaWidget,
  Notification,
  WidgetTracker
} from '@jupyterlab/apputils';
import { INotebookTracker, NotebookActions } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

import { ApiError, IDeployment, TERMINAL_STATES } from './api';
import { batchEndNotice } from './batches';
import { CommandIDs } from './commandids';
import { LogViewer, createLogViewer } from './logviewer';
import { OsireModel } from './model';
import { PlaygroundPanel, createPlayground } from './playgroundpanel';
import { openaiSnippet } from './snippet';

export { CommandIDs } from './commandids';

const CATEGORY = 'LLMs';

export interface ICommandContext {
  app: JupyterFrontEnd;
  model: OsireModel;
  sidebar: Widget;
  rendermime: IRenderMimeRegistry;
  palette: ICommandPalette | null;
  notebooks: INotebookTracker | null;
  playgrounds: WidgetTracker<MainAreaWidget<PlaygroundPanel>>;
  logs: WidgetTracker<MainAreaWidget<LogViewer>>;
}

export function registerCommands(ctx: ICommandContext): void {
  const { app, model } = ctx;
  const { commands } = app;

  /** The deployment named by `args.id` (id or model name), else one the user picks. */
  const pick = async (
    args: any,
    filter: (d: IDeployment) => boolean,
    what: string
  ): Promise<IDeployment | null> => {
    if (model.deployments === null) {
      await model.refresh();
    }
    if (typeof args?.id === 'string') {
      const found = model.find(args.id);
      if (!found) {
        Notification.error(`No deployment ${args.id}`, { autoClose: 5000 });
      }
      return found ?? null;
    }
    const candidates = (model.deployments ?? []).filter(filter);
    if (candidates.length === 0) {
      Notification.info(`No model to ${what}: launch one from the LLMs panel.`, {
        autoClose: 5000
      });
      return null;
    }
    if (candidates.length === 1) {
      return candidates[0];
    }
    const labels = candidates.map(d => `${d.model} (${d.state}, ${d.id})`);
    const result = await InputDialog.getItem({
      title: `Which model to ${what}?`,
      items: labels
    });
    if (!result.button.accept || result.value === null) {
      return null;
    }
    return candidates[labels.indexOf(result.value)] ?? null;
  };

  const ready = (d: IDeployment): boolean => d.state === 'ready';
  const live = (d: IDeployment): boolean => !TERMINAL_STATES.has(d.state);

  commands.addCommand(CommandIDs.openPanel, {
    label: 'Open the LLMs Panel',
    caption: 'Show the sidebar that launches, watches and stops your models',
    execute: () => {
      app.shell.activateById(ctx.sidebar.id);
      ctx.sidebar.node.querySelector<HTMLElement>('button, [tabindex="0"]')?.focus();
    }
  });

  commands.addCommand(CommandIDs.refresh, {
    label: 'Refresh the LLMs Panel',
    execute: async () => {
      await Promise.all([model.refreshCatalog(), model.refreshHealth(), model.refresh()]);
    }
  });

  commands.addCommand(CommandIDs.launch, {
    label: args => (args.model ? `Launch ${args.model}` : 'Launch a Model…'),
    caption: 'Submit a model from the site catalog as a Slurm job (catalog resources)',
    execute: async args => {
      let name = typeof args.model === 'string' ? args.model : null;
      if (!name) {
        if (model.catalog === null) {
          await model.refreshCatalog();
        }
        const names = (model.catalog?.models ?? []).map(m => m.name);
        if (!names.length) {
          Notification.error(
            `No models to launch: ${model.catalogError ?? 'the site catalog is empty'}`
          );
          return;
        }
        const result = await InputDialog.getItem({ title: 'Launch which model?', items: names });
        if (!result.button.accept || !result.value) {
          return;
        }
        name = result.value;
      }
      try {
        const d = await model.launch({ model: name });
        Notification.info(`${name} submitted to the scheduler (deployment ${d.id})`, {
          autoClose: 4000
        });
        app.shell.activateById(ctx.sidebar.id);
      } catch (e) {
        Notification.error(
          `Launch of ${name} refused: ${e instanceof ApiError ? e.message : String(e)}`,
          { autoClose: 8000 }
        );
      }
    }
  });

  commands.addCommand(CommandIDs.stop, {
    label: 'Stop a Model…',
    caption: 'Cancel a deployment’s Slurm jobs',
    execute: async args => {
      const d = await pick(args, live, 'stop');
      if (d) {
        await model.stop(d.id);
      }
    }
  });

  commands.addCommand(CommandIDs.openPlayground, {
    label: 'Open Playground…',
    caption: 'Chat with a ready model in a main-area tab',
    execute: async args => {
      const d = await pick(args, ready, 'chat with');
      if (!d) {
        return;
      }
      let widget = ctx.playgrounds.find(w => w.content.model.deploymentId === d.id);
      if (!widget || widget.isDisposed) {
        widget = createPlayground(model, d, ctx.rendermime);
        void ctx.playgrounds.add(widget);
        app.shell.add(widget, 'main');
      }
      app.shell.activateById(widget.id);
      widget.content.focusInput();
    }
  });

  commands.addCommand(CommandIDs.stopGeneration, {
    label: 'Stop Generation',
    caption: 'Stop the answer the current playground is streaming',
    isEnabled: () => ctx.playgrounds.currentWidget?.content.model.streaming ?? false,
    execute: () => ctx.playgrounds.currentWidget?.content.model.stop()
  });

  commands.addCommand(CommandIDs.openLogs, {
    label: 'Open Log Viewer…',
    caption: 'Follow a deployment’s job log in a main-area tab, with search',
    execute: async args => {
      const d = await pick(args, x => x.replicas.some(r => r.job_id), 'show the log of');
      if (!d) {
        return;
      }
      let widget = ctx.logs.find(w => w.content.deploymentId === d.id);
      if (!widget || widget.isDisposed) {
        widget = createLogViewer(model, d);
        void ctx.logs.add(widget);
        app.shell.add(widget, 'main');
      }
      app.shell.activateById(widget.id);
      widget.content.focusSearch();
    }
  });

  commands.addCommand(CommandIDs.insertSnippet, {
    label: 'Insert Model Call into Notebook…',
    caption: 'Add a code cell calling a ready model with jupyter_osire_llm.client() below the active cell',
    execute: async args => {
      const panel = ctx.notebooks?.currentWidget ?? null;
      if (!panel) {
        Notification.warning('Open a notebook first: the call is inserted below its active cell.', {
          autoClose: 6000
        });
        return;
      }
      const d = await pick(args, ready, 'call from the notebook');
      if (!d) {
        return;
      }
      // A notebook still loading replaces its cells with the file's: insert once it has loaded.
      await panel.context.ready;
      if (panel.isDisposed) {
        return;
      }
      const notebook = panel.content;
      NotebookActions.insertBelow(notebook);
      NotebookActions.changeCellType(notebook, 'code');
      notebook.activeCell?.model.sharedModel.setSource(
        openaiSnippet(model.api.openaiBaseUrl(), d.model).trimEnd()
      );
      app.shell.activateById(panel.id);
      notebook.activate();
    }
  });

  commands.addCommand(CommandIDs.copySnippet, {
    label: 'Copy Code Calling a Model…',
    caption: 'Copy Python that calls a ready model with jupyter_osire_llm.client() (no token)',
    execute: async args => {
      const d = await pick(args, ready, 'copy code for');
      if (!d) {
        return;
      }
      Clipboard.copyToSystem(openaiSnippet(model.api.openaiBaseUrl(), d.model));
      Notification.success(`Code calling ${d.model} copied to the clipboard`, {
        autoClose: 3000
      });
    }
  });

  if (ctx.palette) {
    for (const command of [
      CommandIDs.openPanel,
      CommandIDs.launch,
      CommandIDs.stop,
      CommandIDs.openPlayground,
      CommandIDs.openLogs,
      CommandIDs.insertSnippet,
      CommandIDs.copySnippet,
      CommandIDs.stopGeneration,
      CommandIDs.refresh
    ]) {
      ctx.palette.addItem({ command, category: CATEGORY });
    }
  }
}

/** Notifications for what happens without the user looking: ready, failed, a batch that
 * ended, server problems. */
export function connectNotifications(app: JupyterFrontEnd, model: OsireModel): void {
  model.problem.connect((_, message) => {
    Notification.error(message, { autoClose: 10000 });
  });
  model.batchEnded.connect((_, batch) => {
    const notice = batchEndNotice(batch);
    // Something went wrong: it stays until dismissed; the LLMs panel has the details.
    Notification[notice.kind](notice.text, { autoClose: notice.kind === 'success' ? 6000 : false });
  });
  model.stateChanged.connect((_, { deployment: d }) => {
    if (d.state === 'ready') {
      Notification.success(`${d.model} is ready`, {
        autoClose: 6000,
        actions: [
          {
            label: 'Playground',
            caption: `Chat with ${d.model}`,
            callback: () => void app.commands.execute(CommandIDs.openPlayground, { id: d.id })
          }
        ]
      });
    } else if (d.state === 'failed') {
      Notification.error(`${d.model} failed: ${d.reason ?? 'see its log'}`, {
        autoClose: false, // a failure stays until dismissed
        actions: [
          {
            label: 'Open log',
            callback: () => void app.commands.execute(CommandIDs.openLogs, { id: d.id })
          }
        ]
      });
    }
  });
}
