"""The papermill engine every stage runs with (`papermill ... --engine replication`, registered in pyproject.toml).

It is papermill's nbclient engine, except that the kernel is stopped at once after the last cell instead of
being asked to shut down and waited for. A stage's cells write and close all of its outputs (every file is
written inside a `with` block; the only background threads, the local MLLM grader's, are daemons), so the
kernel's own teardown adds nothing but time: 1.5-2.5 s per stage (Python unloading torch and diffusers), about
a tenth of a smoke run. Not imported by any notebook, so it is no stage's code dependency.
"""

from __future__ import annotations

from papermill.engines import NBClientEngine


class ImmediateShutdown(NBClientEngine):
    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, **kwargs):
        return super().execute_managed_notebook(nb_man, kernel_name, **{**kwargs, "shutdown_kernel": "immediate"})
