/**
 * The playground: a main-area tab to chat with one ready deployment. It calls
 * `<base>/osire/v1/chat/completions` as any OpenAI client does (streamed, Jupyter auth), shows
 * the answer as it arrives rendered as Markdown by JupyterLab's own renderer (with no raw HTML
 * or images of the model's: see `inertMarkdown`), and the time to first token and tokens per
 * second. Enter sends, Shift+Enter adds a line, Escape stops.
 *
 * This is the tab's shell (the Lumino widget); the conversation is `PlaygroundModel`
 * (playgroundmodel.ts) and what it shows is `PlaygroundView` (playgroundview.tsx).
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IRenderMimeRegistry } from '@jupyterlab/rendermime';
import { ReactWidget, UseSignal } from '@jupyterlab/ui-components';
import { Message } from '@lumino/messaging';
import * as React from 'react';

import { IDeployment } from './api';
import { osireIcon } from './icon';
import { OsireModel } from './model';
import { PlaygroundModel } from './playgroundmodel';
import { PlaygroundView } from './playgroundview';

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
