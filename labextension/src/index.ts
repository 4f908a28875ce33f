/**
 * jupyter-osire-llm: the "LLMs" sidebar of JupyterLab, its playground and log viewer tabs, and
 * commands in the palette. Settings: schema/sidebar.json (Settings Editor, "LLMs").
 */
import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ServerConnection } from '@jupyterlab/services';
import { ISettingRegistry } from '@jupyterlab/settingregistry';

import { OsireApi } from './api';
import { osireIcon } from './icon';
import { CommandIDs, connectNotifications, registerCommands } from './commands';
import { LogViewer } from './logviewer';
import { OsireModel } from './model';
import { PlaygroundPanel } from './playgroundpanel';
import { DEFAULT_SETTINGS, IOsireSettings } from './settings';
import { OsireSidebar } from './sidebar';

export { OsireApi } from './api';
export { OsireModel } from './model';
export { openaiSnippet } from './snippet';
export { CommandIDs } from './commandids';
export { osireIcon } from './icon';

const PLUGIN_ID = 'jupyter-osire-llm:sidebar';

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description:
    'Launch, watch, try and stop LLMs running as Slurm jobs, from a JupyterLab sidebar.',
  autoStart: true,
  requires: [IRenderMimeRegistry],
  optional: [ILayoutRestorer, ILabShell, ICommandPalette, INotebookTracker, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    rendermime: IRenderMimeRegistry,
    restorer: ILayoutRestorer | null,
    labShell: ILabShell | null,
    palette: ICommandPalette | null,
    notebooks: INotebookTracker | null,
    settingRegistry: ISettingRegistry | null
  ): void => {
    const api = new OsireApi(ServerConnection.makeSettings());
    let sidebar: OsireSidebar | null = null;
    const model = new OsireModel(api, () => sidebar?.isVisible ?? false);
    sidebar = new OsireSidebar(model, app.commands);
    sidebar.id = 'jupyter-osire-llm-sidebar';
    sidebar.title.icon = osireIcon;
    sidebar.title.caption = 'LLMs';
    sidebar.title.label = labShell ? '' : 'LLMs';
    app.shell.add(sidebar, 'left', { rank: 700 });

    const playgrounds = new WidgetTracker<MainAreaWidget<PlaygroundPanel>>({
      namespace: 'osire-playground'
    });
    const logs = new WidgetTracker<MainAreaWidget<LogViewer>>({ namespace: 'osire-log' });
    registerCommands({
      app,
      model,
      sidebar,
      rendermime,
      palette,
      notebooks,
      playgrounds,
      logs
    });
    connectNotifications(app, model);

    if (restorer) {
      restorer.add(sidebar, 'jupyter-osire-llm-sidebar');
      void restorer.restore(playgrounds, {
        command: CommandIDs.openPlayground,
        args: w => ({ id: w.content.model.deploymentId }),
        name: w => w.content.model.deploymentId
      });
      void restorer.restore(logs, {
        command: CommandIDs.openLogs,
        args: w => ({ id: w.content.deploymentId }),
        name: w => w.content.deploymentId
      });
    }

    if (settingRegistry) {
      void settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          const apply = (): void =>
            model.configure({
              ...DEFAULT_SETTINGS,
              ...(settings.composite as Partial<IOsireSettings>)
            });
          apply();
          settings.changed.connect(apply);
        })
        .catch(reason => console.warn('jupyter-osire-llm: settings not loaded', reason));
    }
    void model.start();
  }
};

export default plugin;
