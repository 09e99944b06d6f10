"""Headless Chromium for the tests: Debian's ``/usr/bin/chromium`` driven by Playwright (never
Playwright's own browser download), in a fresh profile that is thrown away afterwards.

::

    async with chromium(host_rules={"app.example.test": "10.1.0.2"}) as context:
        page = await context.new_page()
        await page.goto("https://app.example.test/")
"""

import contextlib
import shlex
import tempfile
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from playwright.async_api import BrowserContext, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def host_resolver_rules(host_rules: Mapping[str, str]) -> str:
    """``--host-resolver-rules`` that send each host name to its address, and nothing else."""
    return ", ".join(f"MAP {host} {address}" for host, address in host_rules.items())


@contextlib.asynccontextmanager
async def chromium(
    host_rules: Mapping[str, str] | None = None,
    *,
    ignore_https_errors: bool = True,
    args: tuple[str, ...] = (),
    netns: str | None = None,
) -> AsyncIterator[BrowserContext]:
    """A browser context of a freshly started headless Chromium; ``host_rules`` maps host names
    to IP addresses (the browser resolves nothing else differently).

    ``netns``: run it in that network namespace. Chromium aborts what it is loading with
    ``ERR_NETWORK_CHANGED`` when its namespace gains or loses an address, which the test's own
    namespace does whenever a parallel test links or removes a namespace of its own.
    """
    extra = list(args)
    if host_rules:
        extra.append(f"--host-resolver-rules={host_resolver_rules(host_rules)}")
    with (
        tempfile.TemporaryDirectory(prefix="heron-chromium-") as profile,
        tempfile.TemporaryDirectory(prefix="heron-chromium-bin-") as bin_dir,
    ):
        executable = CHROMIUM
        if netns is not None:  # Playwright's pipes (descriptors 3 and 4) pass through ip netns
            wrapper = Path(bin_dir) / "chromium"
            wrapper.write_text(
                f'#!/bin/sh\nexec ip netns exec {shlex.quote(netns)} {CHROMIUM} "$@"\n'
            )
            wrapper.chmod(0o755)
            executable = str(wrapper)
        async with async_playwright() as playwright:
            context = await playwright.chromium.launch_persistent_context(
                profile,
                executable_path=executable,
                headless=True,
                args=[*CHROMIUM_ARGS, *extra],
                ignore_https_errors=ignore_https_errors,
            )
            try:
                yield context
            finally:
                await context.close()
