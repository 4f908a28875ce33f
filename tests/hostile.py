"""Model and engine text carrying markup, for the tests that it is only ever shown as data.

Each piece sets ``window.__pwned`` if any of it is rendered as HTML and run; each is one line (a
catalog's ``env`` value) and reaches an engine as ``OSIRE_FAKE_REPLY`` (the answer) or
``OSIRE_FAKE_LOG_LINE`` (a line of its log), see tests/fake_engine.py.
"""
from __future__ import annotations

REPLY = ('Look: <img src=x onerror="window.__pwned=1"> <script>window.__pwned=2</script> '
         '**bold** `a < b` ![pic](x.png)')
LOG_LINE = 'engine says <img src=x onerror="window.__pwned=3"> <b>loud</b>'
MARKUP = ("<img", "<script", "<b>")       # what must never appear unescaped in rich output

ENV = {"OSIRE_FAKE_REPLY": REPLY, "OSIRE_FAKE_LOG_LINE": LOG_LINE}
