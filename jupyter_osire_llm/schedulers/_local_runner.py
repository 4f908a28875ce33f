"""The detached runner of one local job: ``python -m jupyter_osire_llm.schedulers._local_runner DIR``.

It is the only writer of ``DIR/local_job.json`` once started. Fake GPU (and CPU) slots are
``fcntl`` locks on files in the scheduler's state dir, held by this process while the job runs, so
they are freed even if the runner is killed. The job runs in its own process group; cancel and
time limit send SIGTERM to the group, then SIGKILL after a grace period (vLLM leaves its workers
alive if only the main process dies). The runner is a child subreaper, so processes that left the
job's group (vLLM's engine runs under setsid) become its children when orphaned and are killed
when the job ends, as Slurm's proctrack/cgroup does on a cluster.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Optional

from .base import OUTPUT_FILE, SCRIPT_FILE, JobState
from .local import CANCEL_FILE, hostname, identity, job_env_from_runner, read_state, write_state

POLL = 0.1
PR_SET_CHILD_SUBREAPER = 36


class Runner:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        state = read_state(folder)
        if state is None:
            raise SystemExit(f"no job record in {folder}")
        self.state = state
        self.state_dir = Path(state["state_dir"])
        self.cancelled = False
        self.locks: list[IO[str]] = []

    def update(self, **changes: object) -> None:
        self.state.update(changes)
        write_state(self.folder, self.state)

    def cancel_requested(self) -> bool:
        return self.cancelled or (self.folder / CANCEL_FILE).exists()

    # -- slots

    def _take(self, kind: str, count: int, total: Optional[int]) -> Optional[list[int]]:
        """Lock ``count`` free slots of ``kind``; None (holding nothing new) if too few are free."""
        if total is None or count == 0:
            return []
        got: list[tuple[int, IO[str]]] = []
        for i in range(total):
            f: IO[str] = open(self.state_dir / f"{kind}{i}.lock", "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            got.append((i, f))
            if len(got) == count:
                self.locks.extend(f for _, f in got)
                return [i for i, _ in got]
        for _, f in got:
            f.close()
        return None

    def acquire(self) -> Optional[list[int]]:
        """Wait for slots (PENDING, reason Resources); the GPU indices, or None if cancelled."""
        while not self.cancel_requested():
            gpus = self._take("gpu", self.state["gpus"], self.state["total_gpus"])
            if gpus is not None:
                if self._take("cpu", self.state["cpus"], self.state["total_cpus"]) is not None:
                    return gpus
                self.release()
            if self.state["reason"] != "Resources":
                self.update(reason="Resources")
            time.sleep(0.2)
        return None

    def release(self) -> None:
        for f in self.locks:
            f.close()
        self.locks = []

    # -- the job

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_term)
        become_subreaper()
        self.update(runner_pid=os.getpid(), runner_identity=identity(os.getpid()))
        gpus = self.acquire()
        if gpus is None:
            self.update(state=JobState.CANCELLED.value, reason=None, end_time=time.time())
            return
        env = job_env_from_runner(dict(os.environ))
        env["OSIRE_JOB_ID"] = str(self.state["id"])   # as SLURM_JOB_ID under Slurm
        if self.state["gpus"]:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
        with open(self.folder / OUTPUT_FILE, "ab") as log:
            proc = subprocess.Popen(["/bin/bash", str(self.folder / SCRIPT_FILE)], cwd=self.folder,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
        started = time.time()
        self.update(state=JobState.RUNNING.value, reason=None, start_time=started,
                    node=hostname(), job_pgid=proc.pid, job_identity=identity(proc.pid))
        ending = self.watch(proc, started)
        # leftovers of the group (engine workers), while its leader, a zombie not yet reaped,
        # keeps the group's id from being given to anyone else
        _killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
        kill_descendants()                  # and of groups that left it (setsid)
        self.release()
        self.finish(rc, ending)

    def watch(self, proc: subprocess.Popen, started: float) -> Optional[JobState]:
        """Wait for the job; stop it on cancel or time limit and say which."""
        limit = self.state.get("time_limit")
        while not _exited(proc.pid):
            if self.cancel_requested():
                self.stop(proc)
                return JobState.CANCELLED
            if limit is not None and time.time() - started > limit:
                self.stop(proc)
                return JobState.TIMEOUT
            time.sleep(POLL)
        return None

    def stop(self, proc: subprocess.Popen) -> None:
        _killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + float(self.state.get("kill_grace", 5.0))
        while not _exited(proc.pid):
            if time.monotonic() > deadline:
                _killpg(proc.pid, signal.SIGKILL)
                return
            time.sleep(POLL)

    def finish(self, rc: int, ending: Optional[JobState]) -> None:
        code, sig = (rc, None) if rc >= 0 else (None, -rc)
        if ending is not None:
            state, reason = ending, ("TimeLimit" if ending is JobState.TIMEOUT else None)
        elif rc == 0:
            state, reason = JobState.COMPLETED, None
        else:
            state = JobState.FAILED
            reason = "NonZeroExitCode" if sig is None else f"killed by signal {sig}"
        self.update(state=state.value, reason=reason, end_time=time.time(), exit_code=code,
                    signal=sig)

    def _on_term(self, signum: int, frame: object) -> None:
        self.cancelled = True


def become_subreaper() -> None:
    """Orphaned descendants are re-parented to this process instead of init (Linux 3.4+)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def kill_descendants(rounds: int = 50) -> None:
    """SIGKILL every remaining child (with its group) and reap it, until none is left."""
    me = os.getpid()
    for _ in range(rounds):
        children = _children(me)
        if not children:
            return
        for pid in children:
            _killpg(pid, signal.SIGKILL)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break
        time.sleep(0.05)


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:   # fields: state, ppid, ...
            found.append(int(entry))
    return found


def _exited(pid: int) -> bool:
    """Our child ``pid`` has ended. It is left unreaped (a zombie), so neither its pid nor the
    process group named after it can be reused until ``wait()``."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m jupyter_osire_llm.schedulers._local_runner JOB_FOLDER")
    Runner(Path(argv[0])).run()


if __name__ == "__main__":
    main(sys.argv[1:])
