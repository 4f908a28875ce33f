"""The Jupyter server extension: settings (traitlets), wiring, REST and OpenAI handlers.
The only place that imports jupyter_server or tornado."""
