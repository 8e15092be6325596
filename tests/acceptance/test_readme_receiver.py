"""The README's receiver example, run as written, verifies real signed deliveries.

The code block under "Verifying deliveries" is executed without its last line (``web.run_app``):
its ``app`` is served on 127.0.0.1 instead, the broker delivers to it, and a forged request is
refused. If the example stops working with the libraries we ship, this test says so.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from standardwebhooks.webhooks import Webhook

from tests.conftest import ROOT, make_world, wait_until

PLACEHOLDER = 'Webhook("whsec_...")'


def receiver_example() -> str:
    section = (ROOT / "README.md").read_text().split("## Verifying deliveries", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_readme_receiver_verifies_deliveries_and_refuses_forgeries(make_client, capsys):
    code = receiver_example()
    lines = code.rstrip().splitlines()
    assert lines[-1].startswith("web.run_app("), "the example should end by running its app"
    assert PLACEHOLDER in code
    namespace: dict[str, Any] = {}
    # A syntactically valid stand-in secret until the registration gives the real one.
    body = "\n".join(lines[:-1]).replace(PLACEHOLDER, 'Webhook("whsec_' + "A" * 32 + '")')
    exec(compile(body, "README.md#verifying-deliveries", "exec"), namespace)

    client = await make_client(workers=True)
    world = await make_world(client)
    server = TestServer(namespace["app"], host="127.0.0.1")
    await server.start_server()
    try:
        url = str(server.make_url("/hook"))
        reg = await world.register(url)
        namespace["wh"] = Webhook(reg["secret"])  # what the reader pastes in
        await world.emit(["core/v1/dda/accounts/2001231231", "core/v1/dda/accounts/2001231232"])
        printed: list[str] = []

        async def handled() -> bool:
            printed.append(capsys.readouterr().out)
            return "Core.Account.Opened" in "".join(printed)

        await wait_until(handled)
        assert (
            "Core.Account.Opened ['core/v1/dda/accounts/2001231231', "
            "'core/v1/dda/accounts/2001231232']" in "".join(printed)
        )

        async def recorded_success() -> bool:
            resp = await client.get("/webhooks/v1/events?status=Success", headers=world.partner)
            return len((await resp.json())["data"]) == 1

        await wait_until(recorded_success)

        forged = {
            "webhook-id": "msg_forged",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,bm90IGEgcmVhbCBzaWduYXR1cmU=",
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=b'{"id": "x"}', headers=forged) as resp,
        ):
            assert resp.status == 400
    finally:
        await server.close()
