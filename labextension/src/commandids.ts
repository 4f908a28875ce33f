/** The extension's command ids (palette category "LLMs"); `{id}` args name a deployment. */
export const CommandIDs = {
  openPanel: 'osire:open-panel',
  launch: 'osire:launch',
  stop: 'osire:stop',
  openPlayground: 'osire:open-playground',
  openLogs: 'osire:open-logs',
  insertSnippet: 'osire:insert-snippet',
  copySnippet: 'osire:copy-snippet',
  refresh: 'osire:refresh',
  stopGeneration: 'osire:playground-stop'
} as const;
