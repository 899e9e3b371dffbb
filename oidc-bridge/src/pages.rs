//! HTML pages and the collector script. No framework, no external resources; every dynamic
//! value is HTML-escaped.

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
<title>{}</title><style>body{{font-family:sans-serif;max-width:28em;margin:3em auto;padding:0 1em}}\
label{{display:block;margin:.8em 0 .2em}}input{{width:100%;padding:.4em;font-size:1.1em}}button{{margin-top:1em;padding:.5em 1.5em}}\
.err{{color:#a00}}pre{{white-space:pre-wrap;background:#f4f4f4;padding:.6em;overflow:auto}}</style></head><body>{body}</body></html>",
        escape(title)
    )
}

pub fn login_page(tx: &str, error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=\"err\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(
        "Sign in",
        &format!(
            "<h1>Sign in</h1>{err}<form id=\"login\" method=\"post\" action=\"/login\">\
<input type=\"hidden\" name=\"tx\" value=\"{tx}\">\
<label for=\"username\">User name</label><input id=\"username\" name=\"username\" autocomplete=\"username\" autofocus required>\
<label for=\"password\">Password</label><input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\
<button type=\"submit\">Sign in</button></form>\
<p><small>This page measures how you type the password (key timing only, never the characters) and how you move the pointer, as a second signal.</small></p>\
<script src=\"/collector.js\" data-tx=\"{tx}\" data-field=\"password\" data-form=\"login\"></script>",
            tx = escape(tx)
        ),
    )
}

pub fn totp_page(tx: &str, error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=\"err\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(
        "Confirm it is you",
        &format!(
            "<h1>One more step</h1><p>Enter the code from your authenticator app.</p>{err}\
<form method=\"post\" action=\"/login/totp\"><input type=\"hidden\" name=\"tx\" value=\"{}\">\
<label for=\"code\">Code</label><input id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" pattern=\"[0-9]{{6}}\" autofocus required>\
<button type=\"submit\">Continue</button></form>",
            escape(tx)
        ),
    )
}

pub fn error_page(code: &str, description: &str) -> String {
    page(
        "Sign-in error",
        &format!(
            "<h1>Sign-in error</h1><p class=\"err\"><code>{}</code>: {}</p>",
            escape(code),
            escape(description)
        ),
    )
}

/// RP-Initiated Logout without a valid `id_token_hint`: the user confirms (a POST form
/// carrying the request's parameters), so another site cannot sign them out with a link.
pub fn end_session_confirm_page(params: &[(&str, &str)]) -> String {
    let hidden: String = params
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(k),
                escape(v)
            )
        })
        .collect();
    page(
        "Sign out?",
        &format!(
            "<h1>Sign out?</h1><p>An application asked to end your single sign-on session.</p>\
<form method=\"post\" action=\"/end_session\">{hidden}<input type=\"hidden\" name=\"confirm\" value=\"yes\">\
<button type=\"submit\">Sign out</button></form>"
        ),
    )
}

pub fn signed_out_page() -> String {
    page(
        "Signed out",
        "<h1>Signed out</h1><p>You can close this window.</p>",
    )
}

/// The collector: keydown/keyup *timing* on the password field with the caret position as
/// the only key identity (the key itself is looked at only to skip keys that insert no
/// character; it is never sent), pointer and touch events, posted in batches to /collect.
/// The form is submitted only after the last batch was accepted, so the login sees it.
pub const COLLECTOR_JS: &str = r#"(function () {
  "use strict";
  var me = document.currentScript;
  var tx = me.getAttribute("data-tx");
  // Relying-party pages after login: the collect token from the token response (any
  // origin in collect_origins), else the SSO cookie (same site only: it is SameSite=Lax).
  var token = me.getAttribute("data-token");
  var endpoint = me.getAttribute("data-endpoint") || "/collect";
  var field = document.getElementById(me.getAttribute("data-field") || "password");
  var form = document.getElementById(me.getAttribute("data-form") || "login");
  var seq = 0, buf = [], open = {}, lastMove = 0, lastKey = -1e9, chain = Promise.resolve();
  // Live batches carry a random id of this page: each page load numbers from 0 again.
  var rnd = new Uint8Array(16); crypto.getRandomValues(rnd);
  var page = Array.prototype.map.call(rnd, function (b) { return (b + 256).toString(16).slice(1); }).join("");
  function now() { return Math.round(performance.now() * 10) / 10; }
  function push(e) { buf.push(e); if (buf.length >= 200) { flush(); } }
  function flush() {
    if (!buf.length) { return chain; }
    var batch = { seq: seq++, events: buf };
    if (tx) { batch.tx = tx; } else { batch.page = page; }
    var body = JSON.stringify(batch);
    buf = [];
    var headers = { "Content-Type": "application/json" };
    if (!tx && token) { headers.Authorization = "Bearer " + token; }
    var credentials = (!tx && !token) ? "include" : "omit";
    chain = chain.then(function () {
      return fetch(endpoint, { method: "POST", headers: headers,
                               body: body, credentials: credentials, keepalive: true });
    }).catch(function () {});
    return chain;
  }
  if (field) {
    field.addEventListener("keydown", function (e) {
      if (e.repeat || e.ctrlKey || e.metaKey || e.altKey || e.isComposing) { return; }
      if (typeof e.key !== "string" || e.key.length !== 1) { return; } // inserts no character
      var pos = field.selectionStart || 0;
      open[e.code] = pos;                      // e.code stays in this page, never sent
      lastKey = now();
      push({ type: "kd", t: lastKey, pos: pos });
    });
    field.addEventListener("keyup", function (e) {
      if (!(e.code in open)) { return; }
      lastKey = now();
      push({ type: "ku", t: lastKey, pos: open[e.code] });
      delete open[e.code];
    });
  }
  function pointer(kind) {
    return function (e) {
      var touch = e.pointerType === "touch";
      if (kind === "m") {
        var t = now();
        if (t - lastMove < 8) { return; }
        lastMove = t;
      }
      var type = (touch ? "t" : "p") + (kind === "m" ? "m" : kind);
      var ev = { type: type, t: now(), x: Math.round(e.clientX), y: Math.round(e.clientY) };
      if (kind !== "m" || touch) { ev.button = touch ? (e.pointerId % 64) : e.button; }
      push(ev);
    };
  }
  document.addEventListener("pointermove", pointer("m"), { passive: true });
  document.addEventListener("pointerdown", pointer("d"), { passive: true });
  document.addEventListener("pointerup", pointer("u"), { passive: true });
  // Batches end at a typing pause (no key held, none for a second), so one typed entry
  // is not split across batches: the provider scores the key events of a batch as one
  // entry. A full buffer (200 events) is sent regardless.
  setInterval(function () {
    if (Object.keys(open).length === 0 && now() - lastKey > 1000) { flush(); }
  }, 500);
  if (form) {
    var sent = false;
    form.addEventListener("submit", function (e) {
      if (sent) { return; }
      e.preventDefault();
      flush().then(function () { sent = true; form.submit(); });
    });
  }
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_and_collector_never_sends_keys() {
        let p = login_page("\"><script>", Some("<b>"));
        assert!(!p.contains("\"><script>") && p.contains("&quot;&gt;&lt;script&gt;"));
        // The only fields the collector sends for keys are type, t and pos.
        assert!(!COLLECTOR_JS.contains("key: e.key") && !COLLECTOR_JS.contains("code: e.code"));
        assert!(COLLECTOR_JS.contains("pos: pos"));
    }
}
