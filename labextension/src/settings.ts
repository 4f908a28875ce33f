/**
 * The user's settings of the sidebar, as schema/sidebar.json declares them (the defaults here are
 * the schema's, for the time before the settings registry answers).
 */

export interface IOsireSettings {
  /** Seconds between refreshes while nothing is changing. */
  refreshInterval: number;
  /** The launch form's resource fields: shown open or folded. */
  resourcesView: 'collapsed' | 'expanded';
  /** Minutes of engine metrics the sparklines show. */
  metricsWindow: number;
  /** Seconds between two scrapes of an engine's metrics. */
  metricsInterval: number;
}

export const DEFAULT_SETTINGS: IOsireSettings = {
  refreshInterval: 10,
  resourcesView: 'collapsed',
  metricsWindow: 5,
  metricsInterval: 3
};
