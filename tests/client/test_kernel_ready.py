"""The kernel helper (conftest.Kernel) returns only once IOPub delivers, as ``wait_for_ready``.

On a new, loaded machine the first ``execute`` after ``kernel_info`` could be sent before the
client's IOPub subscription was live, and everything it printed was lost (tests waited 120 s).
Here the slow subscription is made certain: the IOPub channel starts only after the kernel's
first shell reply has been read, so a helper that trusts the shell reply alone returns with
IOPub never heard from.
"""
from __future__ import annotations

import pytest
from jupyter_client import BlockingKernelClient

from conftest import Kernel, start_server, stop_server

pytestmark = pytest.mark.timeout(300)


def test_kernel_helper_waits_for_iopub(tmp_path, monkeypatch):
    heard = []
    start_channels = BlockingKernelClient.start_channels
    get_shell_msg = BlockingKernelClient.get_shell_msg
    get_iopub_msg = BlockingKernelClient.get_iopub_msg

    def start_without_iopub(self, *args, **kwargs):
        start_channels(self, *args, **{**kwargs, "iopub": False})

    def shell_then_iopub(self, *args, **kwargs):
        reply = get_shell_msg(self, *args, **kwargs)
        if self._iopub_channel is None:
            self.iopub_channel.start()          # connects and subscribes only now
        return reply

    def recording_iopub(self, *args, **kwargs):
        msg = get_iopub_msg(self, *args, **kwargs)
        heard.append(msg)
        return msg

    monkeypatch.setattr(BlockingKernelClient, "start_channels", start_without_iopub)
    monkeypatch.setattr(BlockingKernelClient, "get_shell_msg", shell_then_iopub)
    monkeypatch.setattr(BlockingKernelClient, "get_iopub_msg", recording_iopub)
    server = start_server(tmp_path, "local")
    kernel = None
    try:
        kernel = Kernel(server)
        assert any(m["msg_type"] == "status" for m in heard), "ready before IOPub delivered"
        messages = kernel.run("print('first output')", timeout=60)
        assert any(m["msg_type"] == "stream" and m["content"]["text"] == "first output\n"
                   for m in messages)
    finally:
        if kernel:
            kernel.close()
        stop_server(server)
