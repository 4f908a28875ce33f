import { LabIcon } from '@jupyterlab/ui-components';

/** A chip with a speech bubble: a model you talk to, running on compute hardware. */
export const osireIcon = new LabIcon({
  name: 'jupyter-osire-llm:icon',
  svgstr: `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <path d="M7 3h2v2h2V3h2v2h2V3h2v2a2 2 0 0 1 2 2h2v2h-2v2h2v2h-2v2h2v2h-2a2 2 0 0 1-2 2v2h-2v-2h-2v2h-2v-2H9v2H7v-2a2 2 0 0 1-2-2H3v-2h2v-2H3v-2h2V9H3V7h2a2 2 0 0 1 2-2V3zm0 4v10h10V7H7z"/>
    <path d="M9 9h6v4h-3l-2 2v-2H9V9z"/>
  </g>
</svg>`
});
