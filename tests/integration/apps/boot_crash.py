"""Fixture app that loads but crashes while booting: every worker dies before it is ready."""

from __future__ import annotations

import megatrio


class BootCrash(megatrio.App):
    async def on_start(self, rt: megatrio.Runtime) -> None:
        raise RuntimeError("boot failed: cannot reach config service (token=abc123)")


app = BootCrash("boot_crash")
