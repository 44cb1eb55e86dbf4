//! Screenshots: masked **before any byte reaches disk**, encrypted with the tenant DEK through
//! [`super::sealing`] (AES-256-GCM, AAD = tenant + object id, [`sealing::screenshot_aad`];
//! fence-checked against a concurrent key rotation), stored under
//! `<data>/screenshots/<tenant>/` (0600), and served only through 15-minute signed URLs.
//!
//! Decoding defends against decompression bombs (shared/cases/uploads-and-storage.md R03): the
//! IHDR dimensions are checked against [`MAX_SIDE`] and [`MAX_PIXELS`] before any pixel buffer is
//! allocated, the decoder runs with an explicit byte limit, text chunks are never inflated, and
//! decoding runs behind a semaphore ([`AppState::image_slots`]), the pixel work (decode, mask,
//! encode) on low-priority threads ([`AppState::image_workers`], `crate::workers`) so a fleet's
//! uploads do not slow the requests of people browsing (issue 25, P8).

use std::io::{Cursor, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::sealing::{self, Plain};
use super::variables;
use super::{runs, unix_now, AppState, Principal, TenantCtx};
use crate::crypto::signed_url;
use crate::domain::flow::Step;
use crate::domain::now_rfc3339;
use crate::domain::{new_object_id, TenantId};
use crate::error::{ApiError, ApiResult, ErrorCode};
use crate::net::ai_client::{self, Endpoint};
use crate::store::flows;
use crate::store::runs::{AiCall, EvaluationRow, StepRow};
use crate::store::screenshots;
use crate::store::{Conflict, ShotRow, StoreError};

/// Largest upload (10 MiB).
pub const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;
/// Largest width or height in pixels.
pub const MAX_SIDE: u32 = 16_384;
/// Largest pixel count (40 megapixels).
pub const MAX_PIXELS: u64 = 40_000_000;

/// One mask rectangle reported by the agent, in image pixels.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaskRect {
    /// Selector the rectangle belongs to.
    pub selector: String,
    /// Left.
    #[serde(default)]
    pub x: i64,
    /// Top.
    #[serde(default)]
    pub y: i64,
    /// Width.
    #[serde(default)]
    pub width: i64,
    /// Height.
    #[serde(default)]
    pub height: i64,
    /// The selector matched nothing on the page (nothing to paint).
    #[serde(default)]
    pub not_found: bool,
}

fn unprocessable(code: ErrorCode, msg: impl Into<String>) -> ApiError {
    ApiError::new(code, msg)
}

/// Runs pixel work (PNG decode, masking, encode) on the low-priority image threads
/// (`AppState::image_workers`, nice 10: issue 25, P8) and waits for it. Call from a blocking
/// thread; `f` must hold no store connection or lock.
///
/// Errors: whatever `f` returns; `internal` when the image threads are gone or `f` panicked.
fn on_image_worker<R: Send + 'static>(
    st: &AppState,
    f: impl FnOnce() -> ApiResult<R> + Send + 'static,
) -> ApiResult<R> {
    st.image_workers
        .run_blocking(f)
        .unwrap_or_else(|| Err(ApiError::internal("image worker stopped or panicked")))
}

/// Decode `png` (bounded), paint `rects` solid black (clipped to the image) and re-encode as an
/// RGBA8 PNG without ancillary chunks. Returns (png bytes, width, height).
pub fn mask_png(png_bytes: &[u8], rects: &[MaskRect]) -> ApiResult<(Vec<u8>, u32, u32)> {
    let (rgba, w, h) = mask_rgba(png_bytes, rects)?;
    Ok((encode_rgba(&rgba, w, h)?, w, h))
}

/// Encode RGBA8 pixels (`w`×`h`) as a PNG without ancillary chunks.
pub fn encode_rgba(rgba: &[u8], w: u32, h: u32) -> ApiResult<Vec<u8>> {
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut wr = enc.write_header().map_err(ApiError::internal)?;
        wr.write_image_data(rgba).map_err(ApiError::internal)?;
    }
    Ok(out)
}

/// The pixels of `r` (clipped to the `w`×`h` image) as a new RGBA8 buffer with its size; `None`
/// when the rectangle does not overlap the image.
pub fn crop_rgba(
    rgba: &[u8],
    w: u32,
    h: u32,
    r: &crate::domain::flow::Region,
) -> Option<(Vec<u8>, u32, u32)> {
    let x0 = r.x.min(w);
    let y0 = r.y.min(h);
    let x1 = r.x.saturating_add(r.width).min(w);
    let y1 = r.y.saturating_add(r.height).min(h);
    if x1 <= x0 || y1 <= y0 {
        return None;
    }
    let (cw, ch) = (x1 - x0, y1 - y0);
    let mut out = Vec::with_capacity((cw as usize) * (ch as usize) * 4);
    for y in y0..y1 {
        let row = (y as usize) * (w as usize) * 4;
        out.extend_from_slice(&rgba[row + (x0 as usize) * 4..row + (x1 as usize) * 4]);
    }
    Some((out, cw, ch))
}

/// Decode `png` (bounded) and paint `rects` solid black (clipped). Returns (RGBA8, width, height).
pub fn mask_rgba(png_bytes: &[u8], rects: &[MaskRect]) -> ApiResult<(Vec<u8>, u32, u32)> {
    let bad = || {
        unprocessable(ErrorCode::InvalidImage, "the image part is not a valid PNG").field("image")
    };
    let mut dec = png::Decoder::new_with_limits(
        Cursor::new(png_bytes),
        png::Limits {
            bytes: (MAX_PIXELS as usize) * 4 + 1024,
        },
    );
    dec.set_ignore_text_chunk(true);
    dec.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = dec.read_info().map_err(|_| bad())?;
    let (w, h) = {
        let i = reader.info();
        (i.width, i.height)
    };
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE || u64::from(w) * u64::from(h) > MAX_PIXELS
    {
        return Err(unprocessable(
            ErrorCode::ImageDimensionsExceeded,
            format!("image is {w}x{h}; at most {MAX_SIDE} per side and {MAX_PIXELS} pixels"),
        )
        .field("image"));
    }
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).map_err(|_| bad())?;
    let (ct, _) = reader.output_color_type();
    let src = &buf[..frame.buffer_size()];
    let px = (w as usize) * (h as usize);
    let mut rgba = Vec::with_capacity(px * 4);
    match ct {
        png::ColorType::Rgba => rgba.extend_from_slice(src),
        png::ColorType::Rgb => src
            .chunks_exact(3)
            .for_each(|p| rgba.extend_from_slice(&[p[0], p[1], p[2], 255])),
        png::ColorType::GrayscaleAlpha => src
            .chunks_exact(2)
            .for_each(|p| rgba.extend_from_slice(&[p[0], p[0], p[0], p[1]])),
        png::ColorType::Grayscale => src
            .iter()
            .for_each(|g| rgba.extend_from_slice(&[*g, *g, *g, 255])),
        png::ColorType::Indexed => return Err(bad()),
    }
    if rgba.len() != px * 4 {
        return Err(bad());
    }
    for r in rects.iter().filter(|r| !r.not_found) {
        let x0 = r.x.clamp(0, i64::from(w)) as usize;
        let y0 = r.y.clamp(0, i64::from(h)) as usize;
        let x1 = r.x.saturating_add(r.width).clamp(0, i64::from(w)) as usize;
        let y1 = r.y.saturating_add(r.height).clamp(0, i64::from(h)) as usize;
        for y in y0..y1 {
            let row = y * (w as usize) * 4;
            for x in x0..x1 {
                rgba[row + x * 4..row + x * 4 + 4].copy_from_slice(&[0, 0, 0, 255]);
            }
        }
    }
    Ok((rgba, w, h))
}

/// File of a screenshot object: `<data>/screenshots/<tenant>/<object>.fgs`.
pub(crate) fn shot_path(state: &AppState, t: &TenantId, object: &str) -> PathBuf {
    state
        .settings
        .data_dir
        .join("screenshots")
        .join(t.as_str())
        .join(format!("{object}.fgs"))
}

/// Remove the encrypted files of deleted screenshot objects (after their rows were deleted and
/// committed). A file already gone is fine; other failures are logged (an orphaned ciphertext
/// file is unreadable without its row and key version, never a leak of plaintext).
pub(crate) fn remove_files(state: &AppState, t: &TenantId, objects: &[String]) {
    for object in objects {
        if let Err(e) = std::fs::remove_file(shot_path(state, t, object)) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(tenant = %t, error = %e.kind(), "screenshot file not removed");
            }
        }
    }
}

/// Upload result.
#[derive(Debug)]
pub struct Uploaded {
    /// Stored object id.
    pub id: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// For a `checkpoint` step judged by the AI endpoint: the step with its verdict (or the
    /// `error` and its reason).
    pub step: Option<StepRow>,
}

/// A checkpoint judgement prepared while the upload is processed: what goes to the endpoint.
struct PendingEvaluation {
    endpoint: Endpoint,
    expectation: String,
    png: Vec<u8>,
    step: Step,
    secrets: Vec<zeroize::Zeroizing<String>>,
}

/// Validate masks, mask, encrypt and store the screenshot of step `idx` of `run`.
///
/// For a `checkpoint` step with an AI endpoint configured (see [`super::ai_endpoint`]), the
/// **masked** image — cropped to `region_json` (`{x, y, width, height}` in image pixels, as the
/// agent measured the step's region) or else to the step's own `region` — and the expectation,
/// with every secret variable value scrubbed, go to the endpoint; the verdict (or the error) is
/// stored on the step and returned in `step`. That call is rate limited per tenant: 429
/// `rate_limited` + `Retry-After` before anything is stored. A region that misses the image →
/// 422 `invalid_region`, nothing stored.
pub async fn upload(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    run: &str,
    idx: i64,
    image: Vec<u8>,
    masks_json: Option<Vec<u8>>,
    region_json: Option<Vec<u8>>,
) -> ApiResult<Uploaded> {
    let (t, app, token_id) = match &ctx.principal {
        Principal::Agent {
            tenant,
            application_id,
            token_id,
            ..
        } => (tenant.clone(), application_id.clone(), token_id.clone()),
        _ => return Err(ApiError::forbidden()),
    };
    let t0 = t.clone();
    let rects: Vec<MaskRect> = match masks_json {
        None => Vec::new(),
        Some(b) => serde_json::from_slice(&b).map_err(|_| unprocessable(ErrorCode::InvalidMasks, "masks must be a JSON list of {selector, x, y, width, height} or {selector, not_found: true}").field("masks"))?,
    };
    let agent_region: Option<crate::domain::flow::Region> = match region_json {
        None => None,
        Some(b) => Some(serde_json::from_slice(&b).map_err(|_| {
            unprocessable(
                ErrorCode::InvalidRegion,
                "region must be a JSON object {x, y, width, height} of non-negative integers",
            )
            .field("region")
        })?),
    };
    if rects.len() > 500 {
        return Err(
            unprocessable(ErrorCode::InvalidMasks, "at most 500 mask rectangles").field("masks"),
        );
    }
    for r in &rects {
        if !r.not_found && (r.width <= 0 || r.height <= 0) {
            return Err(unprocessable(
                ErrorCode::InvalidMasks,
                format!(
                    "rectangle for `{}` has no area",
                    crate::domain::truncate(&r.selector, 100)
                ),
            )
            .field("masks"));
        }
    }
    let permit = state
        .image_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(ApiError::internal)?;
    let st = state.clone();
    let run = run.to_string();
    let stored = tokio::task::spawn_blocking(
        move || -> ApiResult<(Uploaded, String, Option<PendingEvaluation>)> {
            let _permit = permit;
            let db = st.tenants.get_blocking(&t)?;
            // Read on the store's read connection; the write connection is taken for the row.
            let (r, steps) = {
                let (r, s) = st
                    .tenants
                    .read_blocking(&t, |c| {
                        let Some(r) = crate::store::runs::run(c, &run)? else {
                            return Ok(None);
                        };
                        let s = flows::version_steps(c, &r.flow_id, r.flow_version)?;
                        Ok(Some((r, s)))
                    })?
                    .ok_or_else(ApiError::not_found)?;
                if r.application_id != app || r.agent_token_id.as_deref() != Some(token_id.as_str())
                {
                    return Err(ApiError::not_found());
                }
                if r.status != "running" {
                    return Err(ApiError::new(
                        ErrorCode::InvalidTransition,
                        format!("the run is {}", r.status),
                    ));
                }
                let steps: Vec<Step> = serde_json::from_str(&s).map_err(ApiError::internal)?;
                (r, steps)
            };
            let step = usize::try_from(idx)
                .ok()
                .and_then(|i| steps.get(i))
                .ok_or_else(ApiError::not_found)?;
            let vars = variables::resolve_blocking(&st, &t, &app)?;
            let secret_names: Vec<String> = vars
                .iter()
                .filter(|v| v.secret)
                .map(|v| v.name.clone())
                .collect();
            let step_no = usize::try_from(idx).unwrap_or(usize::MAX);
            for sel in runs::required_masks_at(&steps, step_no, &secret_names) {
                if !rects.iter().any(|r| r.selector == sel) {
                    return Err(unprocessable(
                        ErrorCode::MaskMissing,
                        format!(
                            "no rectangle (or not_found) for mask selector `{}`",
                            crate::domain::truncate(&sel, 200)
                        ),
                    )
                    .field("masks"));
                }
            }
            // Pixel work (decode, mask, encode) on the low-priority image threads.
            let (mut rgba, w, h) = on_image_worker(&st, move || mask_rgba(&image, &rects))?;
            let pending = match step {
                Step::Checkpoint {
                    expectation,
                    region,
                } => {
                    let crop = match agent_region.as_ref().or(region.as_ref()) {
                        Some(r) => Some(crop_rgba(&rgba, w, h, r).ok_or_else(|| {
                            unprocessable(
                                ErrorCode::InvalidRegion,
                                format!("the region does not overlap the {w}x{h} image"),
                            )
                            .field("region")
                        })?),
                        None => None,
                    };
                    match super::ai_endpoint::effective_blocking(&st, &t)? {
                        Some((_, endpoint)) => {
                            super::ai_endpoint::take_call(&st, &t)?;
                            let png = match crop {
                                Some((px, cw, ch)) => {
                                    on_image_worker(&st, move || encode_rgba(&px, cw, ch))?
                                }
                                None => {
                                    let (png, back) = on_image_worker(&st, move || {
                                        encode_rgba(&rgba, w, h).map(|p| (p, rgba))
                                    })?;
                                    rgba = back;
                                    png
                                }
                            };
                            let secrets = variables::secret_values(&vars);
                            Some(PendingEvaluation {
                                endpoint,
                                expectation: variables::scrub(expectation, &secrets),
                                png,
                                step: step.clone(),
                                secrets,
                            })
                        }
                        None => None,
                    }
                }
                _ if agent_region.is_some() => {
                    return Err(unprocessable(
                        ErrorCode::InvalidRegion,
                        "only checkpoint steps take a region",
                    )
                    .field("region"))
                }
                _ => None,
            };
            let png_out = on_image_worker(&st, move || encode_rgba(&rgba, w, h))?;
            // Sealed and recorded through the sealing module: when a key rotation raises the
            // DEK fence between sealing and recording, the store refuses the row
            // (`key_rotated`), the file is removed and sealed again under the current DEK.
            let object = new_object_id();
            let path = shot_path(&st, &t, &object);
            let plain = [Plain::screenshot(&t, &object, png_out)];
            let res = sealing::write_sealed_blocking(&st, &t, &plain, |kv, sealed| {
                let sealed = sealed.into_iter().next().unwrap_or_default();
                if let Some(dir) = path.parent() {
                    crate::store::private_dir(dir)?;
                }
                let tmp = path.with_extension("tmp");
                // A failed write (a full volume: `insufficient_storage`) leaves no file behind.
                let written = (|| -> std::io::Result<()> {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&tmp)?;
                    f.write_all(&sealed)?;
                    crate::fault::disk_full_io()?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, &path)
                })();
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e.into());
                }
                let row = ShotRow {
                    id: object.clone(),
                    run_id: r.id.clone(),
                    step_index: idx,
                    key_version: i64::from(kv),
                };
                let res = {
                    let mut c = db.lock();
                    screenshots::put_screenshot(&mut c, &row, w, h, sealed.len())
                };
                if res.is_err() {
                    let _ = std::fs::remove_file(&path);
                }
                res
            });
            match res {
                Ok(old) => {
                    if let Some(old) = old {
                        let _ = std::fs::remove_file(shot_path(&st, &t, &old));
                    }
                    Ok((
                        Uploaded {
                            id: object,
                            width: w,
                            height: h,
                            step: None,
                        },
                        r.id,
                        pending,
                    ))
                }
                Err(StoreError::Conflict(Conflict::Transition(st))) => Err(ApiError::new(
                    ErrorCode::InvalidTransition,
                    format!("the run is {st}"),
                )),
                Err(e) => Err(e.into()),
            }
        },
    )
    .await
    .map_err(ApiError::internal)?;
    let (mut uploaded, run_id, pending) = stored?;
    super::live::changed(state, &t0);
    if let Some(p) = pending {
        uploaded.step = Some(evaluate(state, &t0, &run_id, idx, p).await?);
        super::live::changed(state, &t0);
    }
    Ok(uploaded)
}

/// Ask the endpoint for the verdict and store it (or the error) on the step.
async fn evaluate(
    state: &Arc<AppState>,
    t: &TenantId,
    run_id: &str,
    idx: i64,
    p: PendingEvaluation,
) -> ApiResult<StepRow> {
    let rep =
        ai_client::ask_verdict(state.egress.clone(), &p.endpoint, &p.expectation, &p.png).await;
    let (verdict, outcome, error) = match &rep.result {
        Ok(v) => (
            Some((
                v.verdict.clone(),
                v.confidence,
                variables::scrub(&v.rationale, &p.secrets),
            )),
            "verdict",
            None,
        ),
        Err(e) => (None, e.outcome(), Some(e.reason())),
    };
    tracing::info!(
        tenant = %t,
        run = %run_id,
        step = idx,
        model = %rep.model,
        outcome,
        bytes_sent = rep.bytes_sent,
        latency_ms = rep.latency_ms,
        "checkpoint evaluated"
    );
    let ev = EvaluationRow {
        verdict,
        call: AiCall {
            model: rep.model,
            bytes_sent: rep.bytes_sent as i64,
            latency_ms: rep.latency_ms as i64,
            outcome: outcome.to_string(),
            error,
            evaluated_at: now_rfc3339(),
        },
    };
    let (run_id, step) = (run_id.to_string(), p.step);
    state
        .tenants
        .run(t, move |c| {
            crate::store::runs::record_step_evaluation(c, &run_id, idx, &ev, &|row| {
                runs::step_status(&step, row, true)
            })
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(Conflict::Transition(st)) => {
                ApiError::new(ErrorCode::InvalidTransition, format!("the run is {st}"))
            }
            other => other.into(),
        })
}

/// A signed URL.
#[derive(Debug, Serialize, ToSchema)]
pub struct SignedUrl {
    /// Path (or absolute URL) of the image, valid until `expires_at`.
    pub url: String,
    /// Expiry (RFC 3339, UTC).
    pub expires_at: String,
}

/// Issue a signed URL for a step's screenshot, valid `screenshots.url_ttl_secs` seconds (config,
/// 1..=[`signed_url::MAX_LIFETIME_SECS`]; the verifier refuses anything longer).
pub async fn signed_url_for(
    state: &Arc<AppState>,
    ctx: &TenantCtx,
    run: &str,
    idx: i64,
) -> ApiResult<SignedUrl> {
    let t = ctx.tenant.clone();
    let r = run.to_string();
    let shot = state
        .tenants
        .run(&t, move |c| screenshots::screenshot_of(c, &r, idx))
        .await?
        .ok_or_else(ApiError::not_found)?;
    let ttl = state
        .settings
        .screenshots
        .url_ttl_secs
        .clamp(1, signed_url::MAX_LIFETIME_SECS);
    let exp = unix_now() as u64 + ttl;
    let url = signed_url::sign(&state.master, &t, &shot.id, exp)
        .ok_or_else(|| ApiError::internal("signing failed"))?;
    let expires_at = chrono::DateTime::from_timestamp(exp as i64, 0)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    Ok(SignedUrl { url, expires_at })
}

/// Decrypt a stored screenshot object of tenant `t` (blocking). `Ok(None)` when the object or
/// its file does not exist; `Key` when it does not decrypt. A key rotation may re-encrypt the
/// file and retire its old DEK between reading the file and fetching the key: the file is then
/// read again (the rotation's rename is atomic).
pub fn decrypt_blocking(
    state: &AppState,
    t: &TenantId,
    object: &str,
) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
    let db = state.tenants.get_blocking(t)?;
    let shot = {
        let c = db.lock();
        screenshots::screenshot(&c, object)?
    };
    let Some(shot) = shot else {
        return Ok(None);
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let data = match std::fs::read(shot_path(state, t, &shot.id)) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        return match sealing::open_screenshot(state, t, &shot.id, &data) {
            Ok(png) => Ok(Some(png)),
            Err(StoreError::NotFound) if attempt < 3 => continue,
            Err(e) => Err(e),
        };
    }
}

/// Serve a signed URL: verify, then decrypt. Every failure is the same 403.
pub async fn fetch_signed(
    state: &Arc<AppState>,
    tenant: &str,
    object: &str,
    query: &str,
) -> ApiResult<Vec<u8>> {
    let denied = || ApiError::new(ErrorCode::InvalidSignature, "invalid or expired link");
    let now = unix_now() as u64;
    if !signed_url::verify(&state.master, tenant, object, query, now) {
        return Err(denied());
    }
    let t = TenantId::parse(tenant).map_err(|_| denied())?;
    let st = state.clone();
    let object = object.to_string();
    tokio::task::spawn_blocking(move || -> ApiResult<Vec<u8>> {
        match decrypt_blocking(&st, &t, &object) {
            Ok(Some(pt)) => Ok(pt.to_vec()),
            Err(StoreError::Busy) => Err(ApiError::busy(2)),
            Ok(None) | Err(_) => Err(denied()),
        }
    })
    .await
    .map_err(ApiError::internal)?
}
