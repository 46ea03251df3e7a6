"""The node's control endpoints under /_sim/ (not part of Ollama; never faulted or counted).

* ``GET /_sim/faults`` → ``{"faults": [...]}``
* ``POST /_sim/faults`` with one fault object, a list of them, or ``{"faults": [...]}`` → 200
  ``{"faults": [...active...]}``; ``DELETE /_sim/faults`` clears them.
* ``GET /_sim/stats`` → counters (see :meth:`SimulatorState.stats`); ``DELETE`` zeroes them.
* ``POST /_sim/models`` ``{"add": [...], "remove": [...]}`` → ``{"models": [...]}``.
"""

from __future__ import annotations

import json

from app.fleet.names import InvalidModelName
from app.simulator.faults import fault_from_dict
from app.simulator.handlers_base import SimHandler
from app.simulator.wire import ApiError, field_list, parse_body


class _ControlHandler(SimHandler):
    control = True


class FaultsHandler(_ControlHandler):
    route = "/_sim/faults"

    async def get(self) -> None:
        await self.send_json({"faults": self.state.faults.active()})

    async def post(self) -> None:
        await self.serve(self._add)

    async def _add(self) -> None:
        try:
            specs = json.loads(self.request.body or b"null")
        except ValueError as exc:
            raise ApiError(400, f"invalid JSON body: {exc}") from None
        if isinstance(specs, dict):
            specs = specs.get("faults", [specs])
        if not isinstance(specs, list) or not specs:
            raise ApiError(400, "expected a fault object, a list of them, or {\"faults\": [...]}")
        try:
            for spec in specs:
                fault_from_dict(spec)  # validate all before adding any
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        for spec in specs:
            self.state.faults.add(spec)
        await self.send_json({"faults": self.state.faults.active()})

    async def delete(self) -> None:
        self.state.clear_faults()
        await self.send_json({"faults": []})


class StatsHandler(_ControlHandler):
    route = "/_sim/stats"

    async def get(self) -> None:
        await self.send_json(self.state.stats())

    async def delete(self) -> None:
        self.state.reset_stats()
        await self.send_json(self.state.stats())


class ModelsControlHandler(_ControlHandler):
    route = "/_sim/models"

    async def post(self) -> None:
        await self.serve(self._change)

    async def _change(self) -> None:
        body = parse_body(self.request.body)
        add, remove = field_list(body, "add"), field_list(body, "remove")
        if not all(isinstance(n, str) for n in add + remove):
            raise ApiError(400, "add and remove must be lists of model names")
        for name in add:
            try:
                self.state.add_model(name)
            except InvalidModelName:
                raise ApiError(400, f"invalid model name {name!r}") from None
        for name in remove:
            self.state.remove_model(name)
        await self.send_json({"models": [e.name for e in self.state.catalog.entries()]})
