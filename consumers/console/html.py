"""Server-side HTML: every value goes through :func:`esc`; a little vanilla JS for follow-live."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

__all__ = ["esc", "field", "form", "hidden", "lag_chart", "layout", "link", "pre", "record_details", "table"]

NAV = [
    ("/", "Overview"),
    ("/topics", "Topics"),
    ("/groups", "Groups"),
    ("/schemas", "Schemas"),
    ("/dlq", "Dead letters"),
    ("/replay", "Replay"),
    ("/audit", "Audit"),
]

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:8px 16px;display:flex;gap:16px;align-items:center}
header a{color:#cfd6e4;text-decoration:none}header a.on{color:#fff;font-weight:600}
header .who{margin-left:auto;font-size:12px}main{padding:12px 16px}
table{border-collapse:collapse;background:#fff;margin:8px 0;font-size:13px}
th,td{border:1px solid #dde1e8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}td.n{text-align:right;font-variant-numeric:tabular-nums}
.bad{color:#b00020;font-weight:600}.ok{color:#17803d;font-weight:600}.muted{color:#6b7280}
pre{background:#fff;border:1px solid #dde1e8;padding:6px;margin:2px 0;max-width:900px;overflow:auto;
 font-size:12px}
form.inline{display:inline}fieldset{border:1px solid #dde1e8;background:#fff;margin:8px 0}
input,select{font:inherit;margin:2px 4px 2px 0}.note{background:#fff8e1;border:1px solid #f0d58c;padding:6px}
.err{background:#fdecee;border:1px solid #f3a8b3;padding:6px}.add{color:#17803d}.del{color:#b00020}
#records{width:100%;table-layout:fixed}#records td{overflow-wrap:anywhere}
#records th:nth-child(1){width:64px}#records th:nth-child(2){width:80px}
#records th:nth-child(3){width:200px}#records th:nth-child(4){width:160px}
#records th:nth-child(5){width:170px}
#records summary{cursor:pointer;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
#records .parts{display:grid;grid-template-columns:repeat(auto-fit,minmax(260px,1fr));gap:6px;margin-top:4px}
#records .parts h4{margin:2px 0;font-size:12px}
#records pre{max-width:none;white-space:pre-wrap;overflow-wrap:anywhere;max-height:420px}
"""

FOLLOW_JS = """
(function(){
  const box=document.getElementById('follow');if(!box)return;
  let timer=null;const body=document.querySelector('#records tbody');
  const map={'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'};
  const esc=s=>String(s??'').replace(/[&<>"']/g,c=>map[c]);
  const js=v=>`<pre>${esc(JSON.stringify(v,null,1))}</pre>`;
  const part=(cls,title,inner)=>`<div class="${cls}"><h4>${title}</h4>${inner}</div>`;
  async function tick(){
    const u=new URL(box.dataset.url,location.href);u.searchParams.set('after',box.dataset.after);
    const r=await fetch(u,{headers:{'Accept':'application/json'}});if(!r.ok)return;
    const d=await r.json();box.dataset.after=d.after;
    document.getElementById('scanned').textContent=d.scanned;
    for(const rec of d.records.reverse()){
      const tr=document.createElement('tr');tr.className='live';
      const heads=esc(rec.headers.map(h=>h.join(': ')).join('\\n'));
      const sid=rec.schema_id?` · schema id ${rec.schema_id}`:'';
      const err=rec.error?`<p class="err">${esc(rec.error)}</p>`:'';
      tr.innerHTML=`<td class=n>${rec.partition}</td><td class=n>${rec.offset}</td>`+
        `<td>${esc(rec.timestamp)}</td><td>${esc(rec.key)}</td><td>${esc(rec.event_type)}</td>`+
        `<td><details><summary>${esc(rec.event_id)}${sid} · ${rec.headers.length} header(s)`+
        `${rec.error?' · error':''}</summary><div class="parts">`+part('event','event',js(rec.data))+
        part('envelope','envelope',js(rec.envelope)+err)+part('headers','headers',`<pre>${heads}</pre>`)+
        `</div></details></td>`;
      body.prepend(tr);
    }
  }
  box.addEventListener('change',()=>{
    if(box.checked){timer=setInterval(tick,1000);tick();}else{clearInterval(timer);}
  });
})();
"""


def esc(value: Any) -> str:
    """Anything as escaped HTML text (None as an empty string)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.isoformat(timespec="milliseconds")
    return escape(str(value), quote=True)


def link(path: str, text: Any, **params: Any) -> str:
    query = urlencode({k: v for k, v in params.items() if v is not None and v != ""})
    return f'<a href="{esc(path + ("?" + query if query else ""))}">{esc(text)}</a>'


def pre(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, indent=1, default=str, ensure_ascii=False)
    return f"<pre>{esc(text)}</pre>"


def record_details(
    *,
    event_id: str,
    schema_id: int | None,
    headers: Sequence[tuple[str, str]],
    envelope: Any,
    data: Any,
    error: str | None,
) -> str:
    """One record's cell: a one-line summary that opens (``<details>``) on the decoded event, the
    envelope and the headers (FOLLOW_JS renders live records the same way)."""
    summary = esc(event_id)
    summary += f" · schema id {schema_id}" if schema_id else ""
    summary += f" · {len(headers)} header(s)" + (" · error" if error else "")
    err = f'<p class="err">{esc(error)}</p>' if error else ""
    heads = pre("\n".join(f"{k}: {v}" for k, v in headers))
    return (
        f'<details><summary>{summary}</summary><div class="parts">'
        f'<div class="event"><h4>event</h4>{pre(data)}</div>'
        f'<div class="envelope"><h4>envelope</h4>{pre(envelope)}{err}</div>'
        f'<div class="headers"><h4>headers</h4>{heads}</div></div></details>'
    )


def table(
    headers: Sequence[str], rows: Iterable[Sequence[Any]], *, html_cols: Iterable[int] = (), id_: str = ""
) -> str:
    """A table; cells are escaped except the columns in ``html_cols`` (already rendered HTML)."""
    raw = set(html_cols)
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = ' class="n"' if isinstance(cell, int | float) and not isinstance(cell, bool) else ""
            cells.append(f"<td{cls}>{cell if i in raw else esc(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    ident = f' id="{esc(id_)}"' if id_ else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def hidden(name: str, value: Any) -> str:
    return f'<input type="hidden" name="{esc(name)}" value="{esc(value)}">'


def form(action: str, csrf: str, inner: str, *, method: str = "post", cls: str = "", id_: str = "") -> str:
    """A form; POST forms always carry the CSRF token."""
    token = hidden("csrf", csrf) if method == "post" else ""
    klass = f' class="{esc(cls)}"' if cls else ""
    ident = f' id="{esc(id_)}"' if id_ else ""
    return f'<form method="{method}" action="{esc(action)}"{klass}{ident}>{token}{inner}</form>'


def field(
    label: str, name: str, value: Any = "", *, kind: str = "text", size: int = 14, options: Sequence[str] = ()
) -> str:
    """A labelled input; ``options`` are offered as suggestions (a datalist)."""
    listed = ""
    if options:
        listed = f' list="{esc(name)}-options"'
        choices = "".join(f'<option value="{esc(o)}">' for o in options)
        listed_html = f'<datalist id="{esc(name)}-options">{choices}</datalist>'
    else:
        listed_html = ""
    return (
        f'<label>{esc(label)} <input type="{kind}" name="{esc(name)}" value="{esc(value)}" '
        f'size="{size}"{listed}>{listed_html}</label>'
    )


def layout(title: str, body: str, *, path: str, who: str | None, csrf: str) -> str:
    def on(href: str) -> str:
        return "on" if path == href or (href != "/" and path.startswith(href)) else ""

    nav = "".join(f'<a href="{href}" class="{on(href)}">{esc(text)}</a>' for href, text in NAV)
    if who:
        user = esc(who) + " " + form("/logout", csrf, '<button type="submit">log out</button>', cls="inline")
    else:
        user = '<a href="/login">log in (admin actions)</a>'
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)} - evstream</title>'
        f'<meta name="viewport" content="width=device-width"><style>{CSS}</style></head><body>'
        f'<header><strong>evstream</strong>{nav}<span class="who">{user}</span></header>'
        f"<main><h1>{esc(title)}</h1>{body}</main><script>{FOLLOW_JS}</script></body></html>"
    )


def lag_chart(samples: Sequence[tuple[float, int]], *, width: int = 640, height: int = 160) -> str:
    """An inline SVG line of total lag over time."""
    if len(samples) < 2:
        return '<p class="muted">not enough samples yet (sampled while the console runs)</p>'
    t0, t1 = samples[0][0], samples[-1][0]
    top = max(1, *(lag for _, lag in samples))
    span = max(t1 - t0, 1e-6)
    points = " ".join(
        f"{(t - t0) / span * (width - 50) + 45:.1f},{height - 20 - lag / top * (height - 30):.1f}"
        for t, lag in samples
    )
    start = datetime.fromtimestamp(t0).strftime("%H:%M:%S")
    end = datetime.fromtimestamp(t1).strftime("%H:%M:%S")
    return (
        f'<svg id="lag-chart" width="{width}" height="{height}" role="img" aria-label="lag over time" '
        f'style="background:#fff;border:1px solid #dde1e8">'
        f'<text x="4" y="14" font-size="11">{top}</text><text x="4" y="{height - 22}" font-size="11">0</text>'
        f'<text x="45" y="{height - 4}" font-size="11">{start}</text>'
        f'<text x="{width - 60}" y="{height - 4}" font-size="11">{end}</text>'
        f'<polyline fill="none" stroke="#2563eb" stroke-width="2" points="{points}"/></svg>'
    )
