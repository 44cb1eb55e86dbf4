//! Executing one flow step in the page. DOM work runs as small JavaScript probes whose inputs
//! are JSON-encoded (never spliced as code); clicks are real mouse events and typing is CDP
//! `Input.insertText`, so a filled value never enters page script source.
//!
//! Waiting rules: `click`, `fill` and `select` wait up to [`ACTION_TIMEOUT_MS`] for their element
//! to be actionable; `assert` retries for the same time until it holds (then reports what it saw
//! last); `wait` uses its own `timeout_ms`.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;

use super::browser::{Capture, Session, VIEWPORT_HEIGHT};
use super::client::MaskEntry;
use crate::domain::flow::{Assertion, Region, Step, WaitFor};

/// How long `click`/`fill`/`select` wait for their element and `assert` retries (ms).
pub const ACTION_TIMEOUT_MS: u64 = 5_000;
/// Quiet time that counts as network idle (ms).
pub const NETWORK_IDLE_MS: u64 = 500;
/// Device pixels added around every mask rectangle (anti-aliased edges stay covered).
pub const MASK_PADDING_PX: i64 = 2;
/// Poll interval of waiting steps.
const POLL: Duration = Duration::from_millis(100);
/// Longest side of a full-page capture, in device pixels (the server's limit).
const MAX_CAPTURE_SIDE: f64 = 16_384.0;
/// Most pixels in a full-page capture (the server's limit).
const MAX_CAPTURE_PIXELS: f64 = 40_000_000.0;

/// A screenshot ready for upload.
pub struct Shot {
    /// PNG bytes.
    pub png: Vec<u8>,
    /// Mask entries in image pixels.
    pub masks: Vec<MaskEntry>,
}

/// What a step needs to know besides itself.
pub struct StepCtx<'a> {
    /// Application base URL.
    pub base_url: &'a str,
    /// Selectors masked in any screenshot of this step (the server's list for the step, the
    /// step's own `mask`, and every earlier secret `fill` selector).
    pub masks: &'a [String],
}

/// Resolve a `navigate`/`wait url` target: absolute http(s) stays, `/path` joins the base URL.
pub fn resolve_url(base: &str, url: &str) -> Result<String, String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return url::Url::parse(url)
            .map(|u| u.to_string())
            .map_err(|_| "the URL is not valid".to_string());
    }
    let b = url::Url::parse(base)
        .map_err(|_| "the application has no valid base_url for a relative URL".to_string())?;
    b.join(url)
        .map(|u| u.to_string())
        .map_err(|_| "the URL is not valid".to_string())
}

const PRELUDE: &str = r#"
const q = (sel) => Array.from(document.querySelectorAll(sel));
const visible = (el) => {
  const r = el.getBoundingClientRect();
  const st = getComputedStyle(el);
  return r.width > 0 && r.height > 0 && st.visibility !== 'hidden' && st.display !== 'none';
};
const desc = (el) => el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
  (typeof el.className === 'string' && el.className.trim() ? '.' + el.className.trim().split(/\s+/).join('.') : '');
const find = (sel) => { try { return q(sel); } catch (e) { return null; } };
"#;

fn script(body: &str, args: serde_json::Value) -> String {
    format!("(async (a) => {{ {PRELUDE}\n{body}\n }})({args})")
}

#[derive(Debug, Deserialize)]
struct Probe {
    s: String,
    #[serde(default)]
    x: f64,
    #[serde(default)]
    y: f64,
    #[serde(default)]
    count: usize,
    #[serde(default)]
    by: String,
    #[serde(default)]
    how: String,
}

fn sel_err(sel: &str, p: &Probe, waited: u64) -> String {
    match p.s.as_str() {
        "invalid" => format!("`{sel}` is not a valid CSS selector"),
        "missing" => format!("selector `{sel}` not found after {waited} ms"),
        "nth" => format!(
            "selector `{sel}` matched {} element(s); nth {} does not exist (waited {waited} ms)",
            p.count, p.by
        ),
        "hidden" => format!("element `{sel}` is not visible after {waited} ms"),
        "disabled" => format!("element `{sel}` is disabled after {waited} ms"),
        "readonly" => format!("element `{sel}` is read-only"),
        "covered" => format!(
            "element `{sel}` is covered by <{}> after {waited} ms (use force: true to click anyway)",
            p.by
        ),
        "notfield" => format!("element `{sel}` is not a text field (found <{}>)", p.by),
        "notselect" => format!("element `{sel}` is not a <select> (found <{}>)", p.by),
        "unfocused" => format!("element `{sel}` did not keep the focus"),
        other => format!("element `{sel}`: unexpected state `{other}`"),
    }
}

/// Poll a probe until it reports `ok` or a permanent state, or `timeout_ms` passes.
async fn poll(
    sess: &Session,
    body: &str,
    args: serde_json::Value,
    sel: &str,
    timeout_ms: u64,
) -> Result<Probe, String> {
    let start = Instant::now();
    let deadline = start + Duration::from_millis(timeout_ms);
    let code = script(body, args);
    let mut last: Option<Probe> = None;
    let mut last_err: Option<String> = None;
    loop {
        match sess.eval::<Probe>(code.clone()).await {
            Ok(p) if p.s == "ok" => return Ok(p),
            Ok(p) if ["invalid", "notfield", "notselect", "readonly"].contains(&p.s.as_str()) => {
                return Err(sel_err(sel, &p, 0))
            }
            Ok(p) => last = Some(p),
            // Navigation in progress (context destroyed): try again.
            Err(e) => last_err = Some(e.to_string()),
        }
        if Instant::now() >= deadline {
            return Err(match (last, last_err) {
                (Some(p), _) => sel_err(sel, &p, timeout_ms),
                (None, Some(e)) => format!("`{sel}`: {e} (after {timeout_ms} ms)"),
                (None, None) => format!("selector `{sel}` not found after {timeout_ms} ms"),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

const CLICK_PROBE: &str = r#"
const els = find(a.sel);
if (els === null) return {s: 'invalid'};
if (els.length === 0) return {s: 'missing'};
if (a.nth >= els.length) return {s: 'nth', count: els.length, by: String(a.nth)};
const el = els[a.nth];
if (a.force) { el.click(); return {s: 'ok', how: 'forced'}; }
el.scrollIntoView({block: 'center', inline: 'center', behavior: 'instant'});
if (!visible(el)) return {s: 'hidden'};
if (el.disabled) return {s: 'disabled'};
const r = el.getBoundingClientRect();
const x = r.left + r.width / 2, y = r.top + r.height / 2;
const hit = document.elementFromPoint(x, y);
if (!hit || (hit !== el && !el.contains(hit))) return {s: 'covered', by: hit ? desc(hit) : 'nothing'};
return {s: 'ok', x: x, y: y};
"#;

const FILL_PROBE: &str = r#"
const els = find(a.sel);
if (els === null) return {s: 'invalid'};
if (els.length === 0) return {s: 'missing'};
const el = els[0];
const tag = el.tagName;
const editable = el.isContentEditable;
if (!(tag === 'INPUT' || tag === 'TEXTAREA' || editable)) return {s: 'notfield', by: desc(el)};
if (!visible(el)) return {s: 'hidden'};
if (el.disabled) return {s: 'disabled'};
if (el.readOnly) return {s: 'readonly'};
el.scrollIntoView({block: 'center', inline: 'center', behavior: 'instant'});
el.focus();
if (document.activeElement !== el) return {s: 'unfocused'};
if (a.clear) {
  if (editable) { el.textContent = ''; }
  else { el.value = ''; }
  el.dispatchEvent(new Event('input', {bubbles: true}));
} else if (!editable) {
  try { const n = el.value.length; el.setSelectionRange(n, n); } catch (e) {}
}
return {s: 'ok'};
"#;

const FILL_DONE: &str = r#"
const els = find(a.sel) || [];
if (els.length > 0) els[0].dispatchEvent(new Event('change', {bubbles: true}));
return {s: 'ok'};
"#;

const SELECT_PROBE: &str = r#"
const els = find(a.sel);
if (els === null) return {s: 'invalid'};
if (els.length === 0) return {s: 'missing'};
const el = els[0];
if (el.tagName !== 'SELECT') return {s: 'notselect', by: desc(el)};
if (el.disabled) return {s: 'disabled'};
const opts = Array.from(el.options);
const v = a.value;
let how = 'value';
let idx = opts.findIndex(o => o.value === v);
if (idx < 0) { how = 'label'; idx = opts.findIndex(o => o.label.trim() === v.trim() || o.text.trim() === v.trim()); }
if (idx < 0 && /^\d+$/.test(v.trim())) { const n = parseInt(v.trim(), 10); if (n < opts.length) { how = 'index'; idx = n; } }
if (idx < 0) return {s: 'nooption', count: opts.length};
if (el.multiple) { opts.forEach((o, i) => { o.selected = (i === idx); }); } else { el.selectedIndex = idx; }
el.dispatchEvent(new Event('input', {bubbles: true}));
el.dispatchEvent(new Event('change', {bubbles: true}));
return {s: 'ok', how: how};
"#;

const VISIBLE_PROBE: &str = r#"
const els = find(a.sel);
if (els === null) return {s: 'invalid'};
if (els.length === 0) return {s: 'missing'};
return els.some(visible) ? {s: 'ok'} : {s: 'hidden'};
"#;

#[derive(Debug, Deserialize)]
struct Observed {
    #[serde(default)]
    invalid: bool,
    count: usize,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    attr: Option<String>,
}

const ASSERT_PROBE: &str = r#"
const els = find(a.sel);
if (els === null) return {invalid: true, count: 0};
if (els.length === 0) return {count: 0};
const el = els[0];
const isField = el.tagName === 'INPUT' || el.tagName === 'TEXTAREA' || el.tagName === 'SELECT';
const text = isField ? el.value : (el.innerText !== undefined ? el.innerText : el.textContent);
const attr = a.attr ? el.getAttribute(a.attr) : null;
return {count: els.length, text: text, attr: attr};
"#;

#[derive(Debug, Deserialize)]
struct Rect {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

/// Page geometry and the client rectangles of each mask selector (`None` = invalid selector).
#[derive(Debug, Deserialize)]
struct Geometry {
    dpr: f64,
    sx: f64,
    sy: f64,
    dw: f64,
    dh: f64,
    rects: Vec<Option<Vec<Rect>>>,
}

const GEOMETRY_PROBE: &str = r#"
const de = document.documentElement;
const body = document.body || de;
const rects = a.sels.map(sel => {
  const els = find(sel);
  if (els === null) return null;
  const out = [];
  for (const el of els) {
    for (const r of [el.getBoundingClientRect()]) {
      if (r.width > 0 && r.height > 0) out.push({x: r.left, y: r.top, w: r.width, h: r.height});
    }
  }
  return out;
});
return {
  dpr: window.devicePixelRatio || 1,
  sx: window.scrollX, sy: window.scrollY,
  dw: Math.max(de.scrollWidth, body.scrollWidth, de.clientWidth),
  dh: Math.max(de.scrollHeight, body.scrollHeight, de.clientHeight),
  rects: rects,
};
"#;

async fn geometry(sess: &Session, sels: &[String]) -> Result<Geometry, String> {
    sess.eval::<Geometry>(script(GEOMETRY_PROBE, json!({ "sels": sels })))
        .await
        .map_err(|e| format!("cannot measure mask elements: {e}"))
}

/// Image-pixel mask entries for `g` under capture `cap`; `origin` is the capture's top-left in
/// client (viewport) CSS pixels.
fn mask_entries(sels: &[String], g: &Geometry, origin: (f64, f64)) -> Vec<MaskEntry> {
    let mut out = Vec::new();
    for (sel, rects) in sels.iter().zip(&g.rects) {
        let rects = rects.as_deref().unwrap_or(&[]);
        if rects.is_empty() {
            out.push(MaskEntry::NotFound {
                selector: sel.clone(),
                not_found: true,
            });
            continue;
        }
        for r in rects {
            let x0 = ((r.x - origin.0) * g.dpr).floor() as i64 - MASK_PADDING_PX;
            let y0 = ((r.y - origin.1) * g.dpr).floor() as i64 - MASK_PADDING_PX;
            let x1 = ((r.x + r.w - origin.0) * g.dpr).ceil() as i64 + MASK_PADDING_PX;
            let y1 = ((r.y + r.h - origin.1) * g.dpr).ceil() as i64 + MASK_PADDING_PX;
            out.push(MaskEntry::Rect {
                selector: sel.clone(),
                x: x0,
                y: y0,
                width: (x1 - x0).max(1),
                height: (y1 - y0).max(1),
            });
        }
    }
    out
}

/// Take a screenshot (viewport, full page or a viewport-relative region) with masks for every
/// selector in `sels`, measured just before and just after the capture (both sets are sent, so
/// an element that moved in between stays covered).
pub async fn screenshot(
    sess: &Session,
    sels: &[String],
    full_page: bool,
    region: Option<&Region>,
) -> Result<Shot, String> {
    let before = geometry(sess, sels).await?;
    if let Some(bad) = sels
        .iter()
        .zip(&before.rects)
        .find(|(_, r)| r.is_none())
        .map(|(s, _)| s)
    {
        return Err(format!("mask `{bad}` is not a valid CSS selector"));
    }
    let (cap, origin) = if let Some(r) = region {
        (
            Capture::Region {
                x: f64::from(r.x) + before.sx,
                y: f64::from(r.y) + before.sy,
                width: f64::from(r.width),
                height: f64::from(r.height),
            },
            (f64::from(r.x), f64::from(r.y)),
        )
    } else if full_page {
        let dpr = before.dpr.max(0.1);
        let width = before.dw.min(MAX_CAPTURE_SIDE / dpr).max(1.0);
        let max_h = (MAX_CAPTURE_SIDE / dpr).min(MAX_CAPTURE_PIXELS / (width * dpr * dpr));
        let height = before
            .dh
            .min(max_h)
            .max(f64::from(VIEWPORT_HEIGHT).min(max_h));
        (
            Capture::FullPage { width, height },
            (-before.sx, -before.sy),
        )
    } else {
        (Capture::Viewport, (0.0, 0.0))
    };
    let png = sess.capture(cap).await.map_err(|e| e.to_string())?;
    let mut masks = mask_entries(sels, &before, origin);
    let after = geometry(sess, sels).await?;
    let origin_after = match cap {
        Capture::FullPage { .. } => (-after.sx, -after.sy),
        _ => origin,
    };
    for m in mask_entries(sels, &after, origin_after) {
        match &m {
            MaskEntry::NotFound { selector, .. } => {
                // Keep `not_found` only if neither measurement found anything.
                if !masks
                    .iter()
                    .any(|e| matches!(e, MaskEntry::Rect { selector: s, .. } | MaskEntry::NotFound { selector: s, .. } if s == selector))
                {
                    masks.push(m);
                }
            }
            MaskEntry::Rect { selector, .. } => {
                masks.retain(
                    |e| !matches!(e, MaskEntry::NotFound { selector: s, .. } if s == selector),
                );
                if !masks.contains(&m) {
                    masks.push(m);
                }
            }
        }
    }
    Ok(Shot { png, masks })
}

fn norm(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn quoted(s: &str) -> String {
    let t: String = s.chars().take(200).collect();
    let more = if s.chars().count() > 200 { "…" } else { "" };
    format!("\"{t}{more}\"")
}

async fn assert_step(
    sess: &Session,
    selector: &str,
    assertion: Assertion,
    expected: Option<&str>,
    attribute: Option<&str>,
) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_millis(ACTION_TIMEOUT_MS);
    let code = script(
        ASSERT_PROBE,
        json!({"sel": selector, "attr": attribute.unwrap_or("")}),
    );
    let want = expected.unwrap_or("");
    loop {
        let verdict: Result<(), String> = match sess.eval::<Observed>(code.clone()).await {
            Err(e) => Err(format!("cannot evaluate `{selector}`: {e}")),
            Ok(o) if o.invalid => return Err(format!("`{selector}` is not a valid CSS selector")),
            Ok(o) => match assertion {
                Assertion::Exists if o.count > 0 => Ok(()),
                Assertion::Exists => Err(format!(
                    "expected `{selector}` to exist, but no element matches (after {ACTION_TIMEOUT_MS} ms)"
                )),
                Assertion::NotExists if o.count == 0 => Ok(()),
                Assertion::NotExists => Err(format!(
                    "expected no element to match `{selector}`, but {} do (after {ACTION_TIMEOUT_MS} ms)",
                    o.count
                )),
                _ if o.count == 0 => Err(format!(
                    "selector `{selector}` not found after {ACTION_TIMEOUT_MS} ms"
                )),
                Assertion::TextEquals => {
                    let got = norm(o.text.as_deref().unwrap_or(""));
                    if got == norm(want) {
                        Ok(())
                    } else {
                        Err(format!(
                            "expected text of `{selector}` to equal {}, got {}",
                            quoted(&norm(want)),
                            quoted(&got)
                        ))
                    }
                }
                Assertion::TextContains => {
                    let got = norm(o.text.as_deref().unwrap_or(""));
                    if got.contains(&norm(want)) {
                        Ok(())
                    } else {
                        Err(format!(
                            "expected text of `{selector}` to contain {}, got {}",
                            quoted(&norm(want)),
                            quoted(&got)
                        ))
                    }
                }
                Assertion::AttrEquals => {
                    let name = attribute.unwrap_or("");
                    match o.attr {
                        Some(v) if v == want => Ok(()),
                        Some(v) => Err(format!(
                            "expected attribute `{name}` of `{selector}` to equal {}, got {}",
                            quoted(want),
                            quoted(&v)
                        )),
                        None => Err(format!(
                            "expected attribute `{name}` of `{selector}` to equal {}, but the element has no such attribute",
                            quoted(want)
                        )),
                    }
                }
            },
        };
        match verdict {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

async fn current_url(sess: &Session) -> Result<String, String> {
    sess.eval::<String>("location.href".to_string())
        .await
        .map_err(|e| e.to_string())
}

fn url_matches(current: &str, want: &str) -> bool {
    match want.strip_suffix('*') {
        Some(prefix) => current.starts_with(prefix),
        None => current == want || current.trim_end_matches('/') == want.trim_end_matches('/'),
    }
}

/// Most time one step may take overall (its own timeout plus slack for the browser).
pub fn step_budget(step: &Step) -> Duration {
    let own = match step {
        Step::Wait { timeout_ms, .. } => *timeout_ms,
        Step::Navigate { .. } => super::browser::NAVIGATION_TIMEOUT.as_millis() as u64,
        _ => ACTION_TIMEOUT_MS,
    };
    Duration::from_millis(own + 30_000)
}

/// Run one step. `Ok(Some(shot))` for `screenshot`/`checkpoint`.
pub async fn run(sess: &Session, step: &Step, ctx: &StepCtx<'_>) -> Result<Option<Shot>, String> {
    match step {
        Step::Navigate { url } => {
            let target = resolve_url(ctx.base_url, url)?;
            sess.goto(&target).await.map_err(|e| e.to_string())?;
            Ok(None)
        }
        Step::Click {
            selector,
            nth,
            force,
        } => {
            let p = poll(
                sess,
                CLICK_PROBE,
                json!({"sel": selector, "nth": nth, "force": force}),
                selector,
                ACTION_TIMEOUT_MS,
            )
            .await?;
            if p.how != "forced" {
                sess.click_at(p.x, p.y).await.map_err(|e| e.to_string())?;
            }
            Ok(None)
        }
        Step::Fill {
            selector,
            value,
            clear_first,
        } => {
            poll(
                sess,
                FILL_PROBE,
                json!({"sel": selector, "clear": clear_first}),
                selector,
                ACTION_TIMEOUT_MS,
            )
            .await?;
            if !value.is_empty() {
                sess.insert_text(value).await.map_err(|e| e.to_string())?;
            }
            sess.eval::<serde_json::Value>(script(FILL_DONE, json!({ "sel": selector })))
                .await
                .map_err(|e| format!("fill `{selector}`: {e}"))?;
            Ok(None)
        }
        Step::Select { selector, value } => {
            let deadline = Instant::now() + Duration::from_millis(ACTION_TIMEOUT_MS);
            let code = script(SELECT_PROBE, json!({"sel": selector, "value": value}));
            loop {
                let p = sess.eval::<Probe>(code.clone()).await;
                match p {
                    Ok(p) if p.s == "ok" => return Ok(None),
                    Ok(p) if p.s == "nooption" => {
                        return Err(format!(
                        "no option of `{selector}` has the value, label or index {} ({} options)",
                        quoted(value),
                        p.count
                    ))
                    }
                    Ok(p) if ["invalid", "notselect"].contains(&p.s.as_str()) => {
                        return Err(sel_err(selector, &p, 0))
                    }
                    Ok(p) if Instant::now() >= deadline => {
                        return Err(sel_err(selector, &p, ACTION_TIMEOUT_MS))
                    }
                    Err(e) if Instant::now() >= deadline => {
                        return Err(format!("select `{selector}`: {e}"))
                    }
                    _ => tokio::time::sleep(POLL).await,
                }
            }
        }
        Step::Wait {
            for_,
            selector,
            url,
            timeout_ms,
        } => {
            wait(
                sess,
                ctx,
                *for_,
                selector.as_deref(),
                url.as_deref(),
                *timeout_ms,
            )
            .await
        }
        Step::Assert {
            selector,
            assertion,
            expected,
            attribute,
        } => {
            assert_step(
                sess,
                selector,
                *assertion,
                expected.as_deref(),
                attribute.as_deref(),
            )
            .await?;
            Ok(None)
        }
        Step::Checkpoint { region, .. } => screenshot(sess, ctx.masks, false, region.as_ref())
            .await
            .map(Some),
        Step::Screenshot { full_page, .. } => screenshot(sess, ctx.masks, *full_page, None)
            .await
            .map(Some),
    }
}

async fn wait(
    sess: &Session,
    ctx: &StepCtx<'_>,
    for_: WaitFor,
    selector: Option<&str>,
    url: Option<&str>,
    timeout_ms: u64,
) -> Result<Option<Shot>, String> {
    let start = Instant::now();
    let deadline = start + Duration::from_millis(timeout_ms);
    match for_ {
        WaitFor::Timeout => {
            tokio::time::sleep(Duration::from_millis(timeout_ms)).await;
            Ok(None)
        }
        WaitFor::Selector => {
            let sel = selector.unwrap_or("");
            poll(sess, VISIBLE_PROBE, json!({ "sel": sel }), sel, timeout_ms)
                .await
                .map(|_| None)
                .map_err(|e| {
                    if e.contains("not a valid CSS selector") {
                        e
                    } else {
                        format!("timeout after {timeout_ms} ms waiting for selector `{sel}` ({e})")
                    }
                })
        }
        WaitFor::Url => {
            let want = resolve_url(ctx.base_url, url.unwrap_or("").trim_end_matches('*'))?;
            let want = if url.is_some_and(|u| u.ends_with('*')) {
                format!("{want}*")
            } else {
                want
            };
            let mut current = String::new();
            loop {
                if let Ok(u) = current_url(sess).await {
                    current = u;
                    if url_matches(&current, &want) {
                        return Ok(None);
                    }
                }
                if Instant::now() >= deadline {
                    return Err(format!(
                        "timeout after {timeout_ms} ms waiting for URL {want} (current URL {current})"
                    ));
                }
                tokio::time::sleep(POLL).await;
            }
        }
        WaitFor::NetworkIdle => loop {
            let (inflight, quiet) = sess.network_activity();
            let quiet_enough = quiet.is_none_or(|q| q >= Duration::from_millis(NETWORK_IDLE_MS));
            if inflight.is_empty()
                && quiet_enough
                && start.elapsed() >= Duration::from_millis(NETWORK_IDLE_MS.min(timeout_ms))
            {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "timeout after {timeout_ms} ms waiting for network idle ({} request(s) in flight: {})",
                    inflight.len(),
                    inflight.join(", ")
                ));
            }
            tokio::time::sleep(POLL).await;
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_resolve_against_the_base() {
        assert_eq!(
            resolve_url("http://127.0.0.1:9/app/", "/login").unwrap(),
            "http://127.0.0.1:9/login"
        );
        assert_eq!(
            resolve_url("http://x", "https://y/z").unwrap(),
            "https://y/z"
        );
        assert!(resolve_url("", "/x").is_err());
        assert!(url_matches("http://a/b?c", "http://a/b*"));
        assert!(url_matches("http://a/b/", "http://a/b"));
        assert!(!url_matches("http://a/c", "http://a/b"));
    }

    #[test]
    fn masks_are_padded_device_pixels_and_not_found_when_empty() {
        let g = Geometry {
            dpr: 2.0,
            sx: 0.0,
            sy: 100.0,
            dw: 0.0,
            dh: 0.0,
            rects: vec![
                Some(vec![Rect {
                    x: 10.0,
                    y: 20.0,
                    w: 30.5,
                    h: 5.0,
                }]),
                Some(vec![]),
            ],
        };
        let sels = vec![".a".to_string(), ".b".to_string()];
        let m = mask_entries(&sels, &g, (0.0, 0.0));
        assert_eq!(
            m[0],
            MaskEntry::Rect {
                selector: ".a".into(),
                x: 18,
                y: 38,
                width: 65,
                height: 14
            }
        );
        assert_eq!(
            m[1],
            MaskEntry::NotFound {
                selector: ".b".into(),
                not_found: true
            }
        );
        // Full page: client rects shift by the scroll offset.
        let m = mask_entries(&sels[..1], &g, (-g.sx, -g.sy));
        assert!(matches!(m[0], MaskEntry::Rect { y: 238, .. }));
    }
}
