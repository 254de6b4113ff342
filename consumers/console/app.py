"""The console's Starlette app: server-rendered pages over :class:`Backend`, two guarded actions.

Read pages need no token. ``POST /dlq/{topic}/redrive`` and ``POST /replay/apply`` need an
``admin`` principal (session from ``POST /login`` or a bearer token) and, for a session, the CSRF
token of the form (double submit, bound into the signed session). A redrive runs only with the
confirmation a dry run issued (signed, single use, for exactly its parameters: a filter, or the
selected records by partition and offset); a replay applies only the plan it showed
(signed), re-checked by :func:`apply_plan` (active members, stale plan) as ``evstream replay apply``.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from evstream.consumers.console.auth import AuditLog, Principal, Signer, TokenCheck, new_csrf
from evstream.consumers.console.backend import Backend, BrowseQuery, LagSampler, RecordView
from evstream.consumers.console.html import (
    esc,
    field,
    form,
    hidden,
    lag_chart,
    layout,
    link,
    pre,
    record_details,
    table,
)
from evstream.consumers.console.settings import ConsoleSettings
from evstream.consumers.replay.apply import apply_plan
from evstream.consumers.replay.deadletters import read_dead_letters
from evstream.consumers.replay.plan import ReplayPlan, Target, parse_datetime, plan_replay
from evstream.consumers.replay.redrives import redrive
from evstream.errors import EvstreamError, GroupActiveError, ReplayError, ReplayInputError, StalePlanError

__all__ = ["Console", "create_app"]

CSRF_COOKIE, SESSION_COOKIE = "evs_csrf", "evs_session"


class Forbidden(Exception):
    def __init__(self, status: int, reason: str) -> None:
        self.status, self.reason = status, reason
        super().__init__(reason)


class Console:
    """Request handlers over one backend; ``app`` is the Starlette application."""

    def __init__(self, backend: Backend, settings: ConsoleSettings, *, sampler: bool = True) -> None:
        self.backend = backend
        self.settings = settings
        self.tokens = TokenCheck(settings.all_tokens())
        self.signer = Signer()
        self.audit = AuditLog()  # actions: "login", "logout", "dlq redrive", "replay apply" (lowercase)
        self.sampler = LagSampler(backend, settings.sample_interval_s)
        self._sampling = sampler
        self._used: set[str] = set()  # single-use redrive confirmations
        routes = [
            Route("/", self.overview),
            Route("/topics", self.topics),
            Route("/topics/{name}", self.topic),
            Route("/topics/{name}/records", self.records),
            Route("/groups", self.groups),
            Route("/groups/{group_id}", self.group),
            Route("/schemas", self.schemas),
            Route("/schemas/usage", self.usage),
            Route("/schemas/subject/{subject}", self.subject),
            Route("/dlq", self.dlqs),
            Route("/dlq/{topic}", self.dlq),
            Route("/dlq/{topic}/redrive", self.redrive, methods=["POST"]),
            Route("/replay", self.replay),
            Route("/replay/apply", self.replay_apply, methods=["POST"]),
            Route("/audit", self.audit_page),
            Route("/login", self.login, methods=["GET", "POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/healthz", lambda _r: JSONResponse({"status": "ok"})),
        ]
        self.app = Starlette(routes=routes, lifespan=self._lifespan)

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        if self._sampling:
            self.sampler.start()
        try:
            yield
        finally:
            self.sampler.close()
            self.backend.close()

    # -- plumbing -----------------------------------------------------------------------------
    def _session(self, request: Request) -> tuple[Principal, str] | None:
        return self.signer.principal(request.cookies.get(SESSION_COOKIE))

    def _csrf(self, request: Request) -> tuple[str, bool]:
        """The visitor's CSRF token and whether it is new (then the response sets the cookie)."""
        found = request.cookies.get(CSRF_COOKIE)
        if found:
            return found, False
        if not hasattr(request.state, "csrf"):
            request.state.csrf = new_csrf()
        return str(request.state.csrf), True

    def _page(self, request: Request, title: str, body: str, status: int = 200) -> HTMLResponse:
        csrf, new = self._csrf(request)
        session = self._session(request)
        html = layout(title, body, path=request.url.path, who=session[0].name if session else None, csrf=csrf)
        response = HTMLResponse(html, status_code=status)
        if new:
            response.set_cookie(CSRF_COOKIE, csrf, httponly=True, samesite="strict")
        return response

    async def _guarded(
        self,
        request: Request,
        title: str,
        audit: str,
        action: Callable[[Principal, dict[str, str]], str],
    ) -> Response:
        """Run a mutating action: admin principal, CSRF, same origin; log who and what (``audit``:
        the action's name in the audit log, lowercase like every other)."""
        form = _form(await request.body())
        try:
            principal = self._authorize(request, form)
        except Forbidden as exc:
            self.audit.record("anonymous", audit, f"refused {exc.status}", reason=exc.reason)
            return self._page(request, title, f'<p class="err">{esc(exc.reason)}</p>', exc.status)
        try:
            body = await run_in_threadpool(action, principal, form)
        except Forbidden as exc:
            self.audit.record(principal.name, audit, f"refused {exc.status}", reason=exc.reason)
            return self._page(request, title, f'<p class="err">{esc(exc.reason)}</p>', exc.status)
        except EvstreamError as exc:
            status = 409 if isinstance(exc, ReplayError) else 400
            self.audit.record(principal.name, audit, f"failed {status}", reason=str(exc))
            return self._page(request, title, f'<p class="err" id="error">{esc(exc)}</p>', status)
        return self._page(request, title, body)

    def _authorize(self, request: Request, form: dict[str, str]) -> Principal:
        origin = request.headers.get("origin")
        if origin and urlsplit(origin).netloc != request.headers.get("host"):
            raise Forbidden(403, "cross-origin request refused")
        bearer = self.tokens.bearer(request.headers.get("authorization"))
        principal = bearer
        if principal is None:
            session = self._session(request)
            if session is None:
                raise Forbidden(401, "log in with a token that has the admin permission")
            principal, bound = session
            cookie = request.cookies.get(CSRF_COOKIE, "")
            sent = form.get("csrf", "")
            if not (cookie and secrets.compare_digest(cookie, sent) and secrets.compare_digest(bound, sent)):
                raise Forbidden(403, "CSRF token missing or wrong: reload the page and try again")
        if not principal.admin:
            raise Forbidden(403, f"{principal.name} has no admin permission")
        return principal

    # -- overview -----------------------------------------------------------------------------
    def overview(self, request: Request) -> Response:
        o = self.backend.overview()
        under = o["under_replicated"]
        rows = [
            ["cluster id", o["cluster_id"]],
            ["brokers", ", ".join(f"{i} ({a})" for i, a in o["brokers"])],
            ["controller", o["controller"]],
            ["under-replicated partitions", len(under)],
            ["topics", o["topics"]],
            ["partitions", o["partitions"]],
            ["consumer groups", o["groups"]],
            [
                "schema registry",
                ("reachable" if o["registry_ok"] else "NOT reachable") + f" ({o['registry_url']})",
            ],
            ["subjects", o["subjects"]],
        ]
        body = table(["", ""], rows, id_="overview")
        if under:
            body += f'<p class="bad">under-replicated: {esc(", ".join(under))}</p>'
        if o["stack"] is not None:
            body += "<h2>Local stack</h2>" + table(
                ["process", "pid", "running", "endpoint"],
                [[r["name"], r["pid"], "yes" if r["alive"] else "NO", r["endpoint"]] for r in o["stack"]],
                id_="stack",
            )
        return self._page(request, "Overview", body)

    # -- topics -------------------------------------------------------------------------------
    def topics(self, request: Request) -> Response:
        rows = [
            [
                link(f"/topics/{t['name']}", t["name"]),
                t["partitions"],
                t["replication"],
                t["records"],
                t["under_replicated"],
                link(f"/topics/{t['name']}/records", "browse"),
            ]
            for t in self.backend.topics()
        ]
        body = table(
            ["topic", "partitions", "replication", "end offsets (sum)", "under-replicated", ""],
            rows,
            html_cols=(0, 5),
            id_="topics",
        )
        return self._page(request, "Topics", body)

    def topic(self, request: Request) -> Response:
        name = request.path_params["name"]
        t = self.backend.topic(name)
        rate = " ".join(f"{n / 60:.1f}" for n in t["per_minute"])
        body = f"<p>{link(f'/topics/{name}/records', 'browse records')} · "
        body += f"{link('/schemas/usage', 'schema versions in use', topic=name)}</p>"
        body += f'<p id="rate">records/s, per minute over the last 5 minutes (oldest first): {esc(rate)}</p>'
        body += "<h2>Partitions</h2>" + table(
            ["partition", "leader", "replicas", "isr", "earliest", "end offset"],
            [
                [p["partition"], p["leader"], p["replicas"], p["isr"], p["earliest"], p["end"]]
                for p in t["partitions"]
            ],
            id_="partitions",
        )
        plan = t["plan"]
        body += "<h2>Declared (topics as code) vs actual</h2>"
        if plan is None or isinstance(plan, str):
            body += f'<p class="muted" id="plan">{esc(plan)}</p>'
        else:
            rows = [["partitions", plan.current_partitions, plan.spec.partitions]]
            rows += [[c.key, c.current, c.desired] for c in plan.config_changes]
            body += f'<p id="plan">plan: <strong>{esc(plan.action)}</strong></p>'
            body += table(["setting", "actual", "declared"], rows, id_="plan-diff")
        body += "<h2>Configs</h2>" + table(
            ["config", "value", "source"],
            [[c["name"], c["value"], c["source"]] for c in t["configs"] if not c["default"]],
            id_="configs",
        )
        return self._page(request, f"Topic {name}", body)

    # -- records ------------------------------------------------------------------------------
    def _query(self, request: Request) -> BrowseQuery:
        q = request.query_params

        def num(name: str) -> int | None:
            text = q.get(name, "").strip()
            if not text:
                return None
            if not text.lstrip("-").isdigit():
                raise EvstreamError(f"{name} must be a whole number, not {text!r}")
            return int(text)

        def when(name: str) -> datetime | None:
            text = q.get(name, "").strip()
            return parse_datetime(text) if text else None

        limit = num("limit") or 50
        return BrowseQuery(
            partition=num("partition"),
            from_offset=num("from_offset"),
            to_offset=num("to_offset"),
            from_time=when("from_time"),
            to_time=when("to_time"),
            event_type=q.get("event_type") or None,
            key=q.get("key") or None,
            event_id=(q.get("event_id") or "").strip() or None,
            correlation_id=q.get("correlation_id") or None,
            limit=max(1, min(limit, 500)),
        )

    def records(self, request: Request) -> Response:
        name = request.path_params["name"]
        query = self._query(request)
        after_text = request.query_params.get("after")
        if after_text is not None:  # follow live: records after these positions, as JSON
            after = {int(p): int(o) for p, _, o in (i.partition(":") for i in after_text.split(",") if i)}
            result = self.backend.browse(name, query, after=after)
            return JSONResponse(
                {
                    "records": [_record_json(r) for r in result.records],
                    "scanned": result.scanned,
                    "after": _positions(result.positions),
                }
            )
        result = self.backend.browse(name, query)
        q = request.query_params
        filters = "".join(
            field(label, key, q.get(key, ""), size=size)
            for label, key, size in [
                ("partition", "partition", 3),
                ("from offset", "from_offset", 8),
                ("to offset", "to_offset", 8),
                ("from time", "from_time", 22),
                ("to time", "to_time", 22),
                ("type", "event_type", 14),
                ("key", "key", 12),
                ("event id", "event_id", 36),
                ("correlation id", "correlation_id", 20),
                ("page", "limit", 4),
            ]
        )
        body = form(
            f"/topics/{name}/records",
            "",
            f"<fieldset>{filters}<button>show</button></fieldset>",
            method="get",
        )
        cut = f"; stopped at {result.cut}" if result.cut else ""
        body += (
            f'<p id="summary">{len(result.records)} record(s) shown, scanned <span id="scanned">'
            f"{result.scanned}</span> record(s) in {result.elapsed_ms:.0f} ms{esc(cut)} · "
            f'<label><input type="checkbox" id="follow" data-url="/topics/{esc(name)}/records" '
            f'data-after="{esc(_positions(result.positions))}"> follow live</label></p>'
        )
        rows = [
            [
                r.partition,
                r.offset,
                r.timestamp,
                r.key,
                r.event_type + (" (foreign)" if r.foreign else ""),
                record_details(
                    event_id=r.event_id,
                    schema_id=r.schema_id,
                    headers=r.headers,
                    envelope=r.envelope,
                    data=r.data,
                    error=r.error,
                ),
            ]
            for r in result.records
        ]
        body += table(
            ["partition", "offset", "timestamp", "key", "event type", "event · envelope · headers"],
            rows,
            html_cols=(5,),
            id_="records",
        )
        return self._page(request, f"Records of {name}", body)

    # -- groups -------------------------------------------------------------------------------
    def groups(self, request: Request) -> Response:
        rows = [
            [link(f"/groups/{g['group_id']}", g["group_id"]), g["state"], g["type"]]
            for g in self.backend.groups()
        ]
        return self._page(
            request, "Consumer groups", table(["group", "state", "type"], rows, html_cols=(0,), id_="groups")
        )

    def group(self, request: Request) -> Response:
        group_id = request.path_params["group_id"]
        d = self.backend.group(group_id)
        self.sampler.record(d, viewed=True)
        since = self.sampler.behind_since(group_id)
        topics = sorted({p.topic for p in d.partitions})
        replay_links = ", ".join(
            f'<a class="replay" href="{esc(_replay_url(group_id, t))}">{esc(t)}</a>' for t in topics
        ) or link("/replay", "this group", group=group_id)
        body = (
            f'<p id="group-state">state <strong>{esc(d.state)}</strong>, coordinator {esc(d.coordinator)}, '
            f"total lag <strong>{d.total_lag}</strong>"
            + (f", behind since {esc(since)}" if since else "")
            + f" · plan a replay of {replay_links}</p>"
        )
        body += "<h2>Members</h2>" + table(
            ["member", "client", "host", "assignment"],
            [[m["member_id"], m["client_id"], m["host"], ", ".join(m["assignment"])] for m in d.members],
            id_="members",
        )
        body += "<h2>Lag over time</h2>" + lag_chart(list(self.sampler.samples.get(group_id, ())))
        body += "<h2>Partitions</h2>" + table(
            ["topic", "partition", "committed", "end offset", "lag", "member"],
            [
                [
                    p.topic,
                    p.partition,
                    "-" if p.committed is None else p.committed,
                    p.end,
                    "-" if p.lag is None else p.lag,
                    p.member or "-",
                ]
                for p in d.partitions
            ],
            id_="lag",
        )
        return self._page(request, f"Group {group_id}", body)

    # -- schemas ------------------------------------------------------------------------------
    def schemas(self, request: Request) -> Response:
        contains = request.query_params.get("q", "")
        subjects, matched = self.backend.subjects(contains)
        rows = [
            [
                link(f"/schemas/subject/{s['subject']}", s["subject"]),
                ", ".join(f"v{v}" for v in s["versions"]),
            ]
            for s in subjects
        ]
        body = form(
            "/schemas", "", field("subject contains", "q", contains) + "<button>find</button>", method="get"
        )
        body += f"<p>{matched} subject(s){', the first 100 shown' if matched > len(rows) else ''}</p>"
        body += table(["subject", "versions"], rows, html_cols=(0,), id_="subjects")
        body += form(
            "/schemas/usage",
            "",
            field("which versions does topic", "topic") + "<button>use?</button>",
            method="get",
        )
        return self._page(request, "Schemas", body)

    def subject(self, request: Request) -> Response:
        subject = request.path_params["subject"]
        versions = sorted(self.backend.registry.get_versions(subject))
        latest = versions[-1]
        q = request.query_params
        a = int(q.get("a") or (versions[-2] if len(versions) > 1 else latest))
        b = int(q.get("b") or latest)
        schema_id, text = self.backend.schema_text(subject, b)
        body = f'<p id="compat">compatibility: <strong>{esc(self.backend.compatibility(subject))}</strong>; '
        body += f"versions: {esc(', '.join(f'v{v}' for v in versions))}</p>"
        if len(versions) > 1:  # opens on the last change: v(N-1) -> vN
            body += form(
                f"/schemas/subject/{subject}",
                "",
                field("diff from", "a", a, size=3) + field("to", "b", b, size=3) + "<button>diff</button>",
                method="get",
            )
            lines = self.backend.diff(subject, a, b) if a != b else []
            kinds = {"+": "add", "-": "del"}
            diff = "".join(f'<span class="{kinds.get(x[:1], "")}">{esc(x)}</span>\n' for x in lines)
            body += f'<h2 id="diff-heading">diff v{a} → v{b}</h2><pre id="diff">{diff or "(identical)"}</pre>'
        else:
            body += f'<p class="muted" id="diff-heading">one version: v{latest}, nothing to diff</p>'
        body += f'<h2 id="schema-heading">v{b} (schema id {schema_id})</h2>{pre(text)}'
        return self._page(request, f"Subject {subject}", body)

    def usage(self, request: Request) -> Response:
        topic = request.query_params.get("topic", "")
        if not topic:
            raise EvstreamError("give a topic")
        rows, scanned = self.backend.usage(topic)
        body = f"<p>the newest records of {esc(topic)}: scanned {scanned}</p>" + table(
            ["event type", "schema id", "subject versions", "records"],
            [
                [
                    r["event_type"],
                    r["schema_id"],
                    ", ".join(f"{s} v{v}" for s, v in r["versions"]),
                    r["records"],
                ]
                for r in rows
            ],
            id_="usage",
        )
        return self._page(request, f"Schema versions in {topic}", body)

    # -- dead letters -------------------------------------------------------------------------
    def dlqs(self, request: Request) -> Response:
        rows = [
            [link(f"/dlq/{t['name']}", t["name"]), t["partitions"], t["records"]]
            for t in self.backend.topics()
            if t["name"].endswith(".dlq")
        ]
        return self._page(
            request,
            "Dead letters",
            table(["dead-letter topic", "partitions", "records"], rows, html_cols=(0,), id_="dlqs"),
        )

    def dlq(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        q = request.query_params
        error_type = q.get("error_type") or None
        records = read_dead_letters(self.backend.kafka, topic, error_type=error_type, limit=200)
        rows = [
            [
                f'<input type="checkbox" name="record" value="{r.partition}:{r.offset}" form="selected" '
                f'aria-label="select {r.partition}:{r.offset}">',
                r.partition,
                r.offset,
                r.event_type,
                r.event_id,
                r.group or "-",
                r.origin or "-",
                s["reason"],
                r.error_type,
                s["error_message"],
                s["attempts"],
                r.redrive_count,
                s["dead_lettered_at"],
            ]
            for r in records
            for s in [r.summary()]
        ]
        csrf, _ = self._csrf(request)
        body = form(
            f"/dlq/{topic}",
            "",
            field("error type", "error_type", error_type or "") + "<button>filter</button>",
            method="get",
        )
        body += f"<p>{len(records)} record(s) (oldest first, at most 200)</p>"
        body += table(
            [
                "",
                "partition",
                "offset",
                "type",
                "event id",
                "group",
                "original",
                "reason",
                "error type",
                "error message",
                "attempts",
                "redriven",
                "dead-lettered at",
            ],
            rows,
            html_cols=(0,),
            id_="dead-letters",
        )
        body += "<h2>Redrive a filtered set</h2>" + form(
            f"/dlq/{topic}/redrive",
            csrf,
            "<fieldset>"
            + field("error type", "error_type", error_type or "")
            + field("at most", "limit", "", size=5)
            + field("max redrives (loop guard)", "max_redrives", 3, size=3)
            + '<label><input type="checkbox" name="from_beginning" value="1"> from the beginning</label>'
            + hidden("mode", "dry")
            + '<button id="dry-run">dry run</button></fieldset>',
        )
        body += "<h2>Redrive the selected records</h2>" + form(
            f"/dlq/{topic}/redrive",
            csrf,
            "<fieldset>"
            + field("max redrives (loop guard)", "max_redrives", 3, size=3)
            + hidden("selection", "1")
            + hidden("mode", "dry")
            + '<button id="dry-run-selected">dry run selected</button>'
            + ' <span class="muted">exactly the ticked records; the redrive position is not moved</span>'
            + "</fieldset>",
            id_="selected",
        )
        return self._page(request, f"Dead letters of {topic}", body)

    async def redrive(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        csrf, _ = self._csrf(request)

        def act(who: Principal, f: dict[str, str]) -> str:
            selected = _selection(f.get("record", "")) if f.get("selection") == "1" else None
            params = {
                "topic": topic,
                "error_type": f.get("error_type") or None,
                "limit": int(f["limit"]) if f.get("limit", "").isdigit() else None,
                "max_redrives": int(f.get("max_redrives") or 3),
                "from_beginning": f.get("from_beginning") == "1",
                "only": selected,
            }
            dry = f.get("mode") != "apply"
            if not dry:
                confirm = f.get("confirm", "")
                payload = self.signer.loads(confirm)
                if payload is None or payload.get("params") != params:
                    raise Forbidden(403, "run the dry run first: this redrive has no valid confirmation")
                if confirm in self._used:
                    raise Forbidden(409, "this confirmation was used already: run a new dry run")
                self._used.add(confirm)
            result = redrive(
                self.backend.kafka,
                topic,
                error_type=params["error_type"],
                limit=params["limit"],
                max_redrives=params["max_redrives"],
                dry_run=dry,
                from_beginning=params["from_beginning"],
                only=None if selected is None else {(p, o) for p, o in selected},
            )
            refused = [[r.partition, r.offset, r.event_id, why] for r, why in result.refused]
            self.audit.record(
                who.name,
                "dlq redrive" + (" (dry run)" if dry else ""),
                "ok",
                params=params,
                sent=dict(result.sent),
                refused=len(refused),
            )
            verb = "would send" if dry else "sent"
            body = (
                f'<p id="result">{verb} <strong>{result.total_sent}</strong> record(s) '
                f"{esc(dict(result.sent))}; refused {len(refused)}; passed over {result.passed_over}</p>"
            )
            if selected is not None:
                body += (
                    "<h2>"
                    + ("Would send" if dry else "Sent")
                    + "</h2>"
                    + table(
                        ["partition", "offset", "type", "event id", "group", "to"],
                        [
                            [r.partition, r.offset, r.event_type, r.event_id, r.group, r.redrive_target()]
                            for r in result.redriven
                        ],
                        id_="redriven",
                    )
                )
            if refused:
                body += "<h2>Refused (loop guard)</h2>" + table(
                    ["partition", "offset", "event id", "why"], refused, id_="refused"
                )
            if dry and result.total_sent:
                confirm = self.signer.dumps({"params": params, "nonce": secrets.token_hex(8)})
                inner = "".join(hidden(k, v) for k, v in f.items() if k not in ("csrf", "mode", "confirm"))
                inner += hidden("mode", "apply") + hidden("confirm", confirm)
                inner += f'<button id="redrive">redrive {result.total_sent} record(s)</button>'
                body += form(f"/dlq/{topic}/redrive", csrf, inner)
            return body + f"<p>{link(f'/dlq/{topic}', 'back to the dead letters')}</p>"

        return await self._guarded(request, f"Redrive {topic}", "dlq redrive", act)

    # -- replay -------------------------------------------------------------------------------
    def replay(self, request: Request) -> Response:
        q = request.query_params
        group, topic = q.get("group", ""), q.get("topic", "")
        suggested: list[str] = []
        if group and not topic:  # the group's topics: the only one filled in, several offered
            with contextlib.suppress(EvstreamError):
                suggested = sorted({p.topic for p in self.backend.group(group).partitions})
            topic = suggested[0] if len(suggested) == 1 else ""
        kind, value = q.get("kind", "earliest"), q.get("value", "")
        parts = q.get("partitions", "")
        kinds = "".join(
            f"<option{' selected' if k == kind else ''}>{k}</option>"
            for k in ("earliest", "latest", "offset", "datetime", "duration", "shift")
        )
        body = form(
            "/replay",
            "",
            "<fieldset>"
            + field("group", "group", group)
            + field("topic", "topic", topic, options=suggested)
            + f'<label>target <select name="kind">{kinds}</select></label>'
            + field("value (offset, ISO time, PT1H, -N)", "value", value)
            + field("partitions (1,2)", "partitions", parts, size=6)
            + '<label><input type="checkbox" name="allow_new_group" value="1"> new group</label>'
            + '<button id="plan">plan</button></fieldset>',
            method="get",
        )
        if group and topic:
            target = Target(
                kind=kind,  # checked by the model
                value=int(value)
                if kind in ("offset", "shift") and value.lstrip("-").isdigit()
                else (value or None),
            )
            chosen = [int(p) for p in parts.split(",") if p.strip().isdigit()] or None
            plan = plan_replay(
                self.backend.cluster,
                group,
                topic,
                target,
                partitions=chosen,
                allow_new_group=q.get("allow_new_group") == "1",
            )
            state = self.backend.cluster.group(group)
            body += (
                f'<p id="plan-summary">{plan.replayed} event(s) will be replayed, {plan.skipped} skipped '
                f"({esc(plan.target)})</p>"
            )
            if state.members:
                body += (
                    f'<p class="note" id="active">group {esc(group)} has {len(state.members)} active '
                    f"member(s): {esc(', '.join(state.members))}; apply is refused until they stop</p>"
                )
            body += table(
                ["partition", "committed", "→ target", "earliest", "end", "replayed", "skipped"],
                [
                    [
                        p.partition,
                        "-" if p.current is None else p.current,
                        p.target,
                        p.earliest,
                        p.end,
                        p.replayed,
                        p.skipped,
                    ]
                    for p in plan.partitions
                ],
                id_="replay-plan",
            )
            text = plan.model_dump_json()
            csrf, _ = self._csrf(request)
            body += form(
                "/replay/apply",
                csrf,
                hidden("plan", text)
                + hidden("sig", self.signer.mac(text))
                + '<button id="apply">apply this plan</button>',
            )
        return self._page(request, "Replay", body)

    async def replay_apply(self, request: Request) -> Response:
        def act(who: Principal, f: dict[str, str]) -> str:
            text = f.get("plan", "")
            if not self.signer.verify(text, f.get("sig", "")):
                raise Forbidden(403, "not a plan this console made: plan again")
            plan = ReplayPlan.model_validate_json(text)
            try:
                result = apply_plan(self.backend.cluster, plan)
            except (GroupActiveError, StalePlanError) as exc:
                self.audit.record(who.name, "replay apply", "refused", group=plan.group_id, reason=str(exc))
                raise
            self.audit.record(
                who.name,
                "replay apply",
                "ok",
                group=plan.group_id,
                topic=plan.topic,
                target=str(plan.target),
                replayed=plan.replayed,
            )
            rows = [[p, o] for (_t, p), o in sorted(result.committed.items())]
            notes = "".join(f"<li>{esc(n)}</li>" for n in result.notes)
            return (
                f'<p id="result">applied: group {esc(plan.group_id)} on {esc(plan.topic)}, '
                f"{plan.replayed} event(s) to replay</p><ul>{notes}</ul>"
                + table(["partition", "committed now"], rows, id_="committed")
            )

        return await self._guarded(request, "Replay apply", "replay apply", act)

    # -- audit, login -------------------------------------------------------------------------
    def audit_page(self, request: Request) -> Response:
        rows = [
            [
                e["at"],
                e["who"],
                e["action"],
                e["outcome"],
                json.dumps(
                    {k: v for k, v in e.items() if k not in ("at", "who", "action", "outcome")}, default=str
                ),
            ]
            for e in self.audit.entries
        ]
        return self._page(
            request, "Audit log", table(["at", "who", "action", "outcome", "details"], rows, id_="audit")
        )

    async def login(self, request: Request) -> Response:
        csrf, _ = self._csrf(request)
        if request.method == "GET":
            inner = '<label>token <input type="password" name="token" size="50" autocomplete="off"></label>'
            inner += '<button id="login">log in</button>'
            return self._page(request, "Log in", form("/login", csrf, inner))
        f = {k: v[-1] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not cookie or not secrets.compare_digest(cookie, f.get("csrf", "")):
            return self._page(
                request, "Log in", '<p class="err">CSRF token missing or wrong: reload</p>', 403
            )
        principal = self.tokens.principal(f.get("token"))
        if principal is None:
            self.audit.record("anonymous", "login", "refused 401")
            return self._page(request, "Log in", '<p class="err">unknown token</p>', 401)
        self.audit.record(principal.name, "login", "ok", permissions=sorted(principal.permissions))
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.signer.session(principal, cookie, self.settings.session_hours),
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        session = self._session(request)
        f = {k: v[-1] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        if session is not None and secrets.compare_digest(session[1], f.get("csrf", "")):
            self.audit.record(session[0].name, "logout", "ok")
        response = RedirectResponse("/", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response


def _form(body: bytes) -> dict[str, str]:
    """A urlencoded form, the last value of each field; the ticked ``record`` boxes joined by ','."""
    parsed = parse_qs(body.decode(errors="replace"))
    found = {k: v[-1] for k, v in parsed.items()}
    if "record" in parsed:
        found["record"] = ",".join(parsed["record"])
    return found


def _selection(text: str) -> list[list[int]]:
    """``P:O,P:O`` (the ticked records) as sorted [partition, offset] pairs."""
    pairs = set()
    for item in filter(None, (i.strip() for i in text.split(","))):
        partition, sep, offset = item.partition(":")
        if not (sep and partition.isdigit() and offset.isdigit()):
            raise ReplayInputError(f"not a dead letter's partition:offset: {item!r}")
        pairs.add((int(partition), int(offset)))
    if not pairs:
        raise ReplayInputError("tick at least one dead letter")
    return [list(p) for p in sorted(pairs)]


def _replay_url(group: str, topic: str) -> str:
    return f"/replay?{urlencode({'group': group, 'topic': topic})}"


def _positions(positions: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(positions.items()))


def _record_json(r: RecordView) -> dict[str, Any]:
    return {
        "partition": r.partition,
        "offset": r.offset,
        "timestamp": r.timestamp.isoformat() if r.timestamp else None,
        "key": r.key,
        "event_type": r.event_type,
        "event_id": r.event_id,
        "schema_id": r.schema_id,
        "envelope": r.envelope,
        "data": r.data,
        "headers": r.headers,
        "error": r.error,
    }


def create_app(backend: Backend, settings: ConsoleSettings, *, sampler: bool = True) -> Starlette:
    """The console as an ASGI app; errors of the library become a page with the one-line reason."""
    console = Console(backend, settings, sampler=sampler)

    async def evstream_error(request: Request, exc: Exception) -> Response:
        status = 404 if "no topic" in str(exc) or "no consumer group" in str(exc) else 400
        return console._page(request, "Error", f'<p class="err" id="error">{esc(exc)}</p>', status)

    console.app.add_exception_handler(EvstreamError, evstream_error)
    console.app.state.console = console
    return console.app
