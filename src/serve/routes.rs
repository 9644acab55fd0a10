//! The server's routes: each request becomes one response, and every failure a 4xx or 5xx
//! with a JSON body `{"error": "<reason>"}`. Nothing here can stop the server.

use super::ServeConfig;
use super::budget::{Budget, DecodeBudget, Exhausted, Granted, Reservation};
use super::metrics::Metrics;
use super::served::{InService, Served, load_checked};
use crate::data::{Preprocess, decode_image_bytes};
use crate::model::Predictions;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// The web page, with its styles and script inline.
const PAGE: &str = include_str!("page.html");

/// A response body.
type Reply = Response<Full<Bytes>>;

/// A request that cannot be answered with predictions: its status and the reason shown.
struct Refusal {
    status: StatusCode,
    reason: String,
}

impl Refusal {
    fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Refusal {
            status,
            reason: reason.into(),
        }
    }
}

/// What every request shares: the model in service, the budgets, the limits and the metrics.
pub(super) struct App {
    /// Replaced whole by a reload; a request keeps the one it started with.
    current: RwLock<Arc<InService>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    path: PathBuf,
    config: ServeConfig,
    metrics: Arc<Metrics>,
    /// Pixels being decoded, across every request.
    decode_budget: DecodeBudget,
    /// Body bytes being read or held, across every request.
    body_budget: Budget,
}

/// Every route, for dispatch and for the `route` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Page,
    Health,
    Model,
    Metrics,
    Predict,
    Reload,
    Explain,
}

impl Route {
    fn of(path: &str) -> Option<Route> {
        Some(match path {
            "/" | "/index.html" => Route::Page,
            "/healthz" => Route::Health,
            "/api/model" => Route::Model,
            "/metrics" => Route::Metrics,
            "/api/predict" => Route::Predict,
            "/api/reload" => Route::Reload,
            "/api/explain" => Route::Explain,
            _ => return None,
        })
    }

    fn label(route: Option<Route>) -> &'static str {
        match route {
            Some(Route::Page) => "/",
            Some(Route::Health) => "/healthz",
            Some(Route::Model) => "/api/model",
            Some(Route::Metrics) => "/metrics",
            Some(Route::Predict) => "/api/predict",
            Some(Route::Reload) => "/api/reload",
            Some(Route::Explain) => "/api/explain",
            None => "other",
        }
    }

    /// Whether the route reads (GET, and HEAD wherever GET works) or acts (POST).
    fn takes_post(self) -> bool {
        matches!(self, Route::Predict | Route::Reload | Route::Explain)
    }
}

impl App {
    pub(super) fn new(
        served: &Served,
        config: &ServeConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let current = InService::start(served, config, &metrics)?;
        metrics.set_model(&served.sha256, &served.file.model.classes.names);
        Ok(App {
            current: RwLock::new(Arc::new(current)),
            reloading: tokio::sync::Mutex::new(()),
            path: served.path.clone(),
            decode_budget: DecodeBudget::new(config.decode_budget, config.budget_wait),
            body_budget: Budget::new(config.body_budget, config.budget_wait),
            config: config.clone(),
            metrics,
        })
    }

    /// The model in service now.
    fn current(&self) -> Arc<InService> {
        // A panic while holding the lock cannot leave a half-written Arc: use it anyway.
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Routes one request and counts it.
    pub(super) async fn handle(&self, req: Request<Incoming>) -> Reply {
        let started = Instant::now();
        let route = Route::of(req.uri().path());
        let reply = self.dispatch(route, req).await;
        self.metrics.observe_request(
            Route::label(route),
            reply.status().as_u16(),
            started.elapsed(),
        );
        reply
    }

    async fn dispatch(&self, route: Option<Route>, req: Request<Incoming>) -> Reply {
        let path = req.uri().path().to_owned();
        let Some(route) = route else {
            let reason =
                format!("no route {path} (try /, /api/predict, /api/model, /metrics or /healthz)");
            return refuse(&Refusal::new(StatusCode::NOT_FOUND, reason));
        };
        let method = req.method().clone();
        let (fits, allow) = if route.takes_post() {
            (method == Method::POST, "POST")
        } else {
            (method == Method::GET || method == Method::HEAD, "GET, HEAD")
        };
        if !fits {
            let want = if route.takes_post() { "POST" } else { "GET" };
            let reason = format!("{path} does not take {method}; use {want}");
            let mut reply = refuse(&Refusal::new(StatusCode::METHOD_NOT_ALLOWED, reason));
            reply
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            return reply;
        }
        match route {
            Route::Health => json_reply(StatusCode::OK, &json!({"status": "ok"})),
            Route::Model => with_type(
                StatusCode::OK,
                self.current().metadata.clone(),
                "application/json",
            ),
            Route::Metrics => with_type(
                StatusCode::OK,
                Bytes::from(self.metrics.encode()),
                super::metrics::CONTENT_TYPE,
            ),
            Route::Predict => match self.predict(req).await {
                Ok(answer) => json_reply(StatusCode::OK, &answer),
                Err(refusal) => refuse(&refusal),
            },
            Route::Reload => self.reload_route().await,
            Route::Explain => match self.explain(req).await {
                Ok(reply) => reply,
                Err(refusal) => refuse(&refusal),
            },
            Route::Page => with_type(
                StatusCode::OK,
                Bytes::from_static(PAGE.as_bytes()),
                "text/html; charset=utf-8",
            ),
        }
    }

    /// `POST /api/reload`, when the server was started with `--allow-reload`.
    async fn reload_route(&self) -> Reply {
        if !self.config.allow_reload {
            return refuse(&Refusal::new(
                StatusCode::FORBIDDEN,
                "reloading over HTTP is off: start the server with --allow-reload, or send it SIGHUP",
            ));
        }
        match self.reload().await {
            Ok(sha256) => json_reply(
                StatusCode::OK,
                &json!({"status": "reloaded", "sha256": sha256}),
            ),
            Err(reason) => refuse(&Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, reason)),
        }
    }

    /// Reads the model file again and, once it is checked, puts it in service; requests in
    /// flight finish on the model they started with. A bad file keeps the old model, is
    /// logged on standard error and counted. Returns the new file's SHA-256.
    ///
    /// # Errors
    /// Why the file was refused.
    pub(super) async fn reload(&self) -> Result<String, String> {
        let _one_at_a_time = self.reloading.lock().await;
        let path = self.path.clone();
        let loaded = tokio::task::spawn_blocking(move || load_checked(&path)).await;
        let started = match loaded {
            Ok(Ok(served)) => InService::start(&served, &self.config, &self.metrics)
                .map(|s| (s, served))
                .map_err(|e| format!("cannot start a batch worker: {e}")),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("the reload stopped: {e}")),
        };
        match started {
            Ok((in_service, served)) => {
                let sha256 = in_service.sha256.clone();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(in_service);
                self.metrics
                    .set_model(&sha256, &served.file.model.classes.names);
                self.metrics.reloads.inc();
                eprintln!(
                    "deepcat serve: reloaded {} (sha256 {sha256})",
                    self.path.display()
                );
                Ok(sha256)
            }
            Err(reason) => {
                self.metrics.failed_reloads.inc();
                eprintln!(
                    "deepcat serve: reload of {} failed, still serving the previous model (sha256 {}): {reason}",
                    self.path.display(),
                    self.current().sha256
                );
                Err(reason)
            }
        }
    }

    /// `POST /api/predict`: every part of a multipart body, or else the body itself as one
    /// image (its format found from its bytes, whatever the `Content-Type` says).
    async fn predict(&self, req: Request<Incoming>) -> Result<Value, Refusal> {
        let in_service = self.current();
        let kind = BodyKind::of(&req)?;
        let (_body_reserved, body) = self.read_body(req).await?;
        match kind {
            BodyKind::Raw => {
                if body.is_empty() {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "empty body: send the image's bytes (curl --data-binary @photo.jpg)",
                    ));
                }
                let mut answers = self.classify(&in_service, vec![(None, body)]).await?;
                Ok(answers.pop().unwrap_or(Value::Null))
            }
            BodyKind::Multipart(boundary) => {
                let parts = read_parts(body, boundary).await?;
                let answers = self.classify(&in_service, parts).await?;
                Ok(json!({ "predictions": answers }))
            }
        }
    }

    /// The body, refused past the upload limit or the body timeout. Its bytes are reserved
    /// from the body budget first (the declared length, or the upload limit when chunked),
    /// and stay reserved while the returned reservation lives.
    async fn read_body(&self, req: Request<Incoming>) -> Result<(Reservation, Bytes), Refusal> {
        let too_large = || {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body is larger than the upload limit of {} bytes (--max-upload)",
                    self.config.max_upload
                ),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.config.max_upload) {
            return Err(too_large());
        }
        let wanted = declared.unwrap_or(self.config.max_upload);
        let reserved = self.reserved(
            self.body_budget.reserve(wanted).await,
            "body memory (--body-budget)",
        )?;
        let limit = usize::try_from(self.config.max_upload).unwrap_or(usize::MAX);
        let reading = Limited::new(req.into_body(), limit).collect();
        match tokio::time::timeout(self.config.body_timeout, reading).await {
            Err(_) => Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s (--body-timeout)",
                    self.config.body_timeout.as_secs_f64()
                ),
            )),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(e)) => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )),
            Ok(Ok(collected)) => Ok((reserved, collected.to_bytes())),
        }
    }

    /// A budget's answer as a reservation, counting decode waits and refusals; a budget still
    /// full after the wait is a 503 with `Retry-After`.
    fn reserved(
        &self,
        granted: Result<(Reservation, Granted), Exhausted>,
        what: &str,
    ) -> Result<Reservation, Refusal> {
        match granted {
            Ok((reserved, how)) => {
                if how == Granted::AfterWaiting && what.starts_with("decode") {
                    self.metrics.decode_budget_waits.inc();
                }
                Ok(reserved)
            }
            Err(Exhausted) => {
                self.metrics.budget_refusals.inc();
                Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "busy: the server's {what} is in use by other requests; retry in a second"
                    ),
                ))
            }
        }
    }

    /// Decodes every image in parallel (each once its pixels fit the decode budget), queues
    /// the rows for the batch worker and returns one prediction object per image, in order.
    /// `images` are (file name, bytes).
    async fn classify(
        &self,
        in_service: &InService,
        images: Vec<(Option<String>, Bytes)>,
    ) -> Result<Vec<Value>, Refusal> {
        let several = images.len() > 1;
        let which = |i: usize, name: &Option<String>| match (name, several) {
            (Some(n), _) => format!("part {} ({n}): ", i + 1),
            (None, true) => format!("part {}: ", i + 1),
            (None, false) => String::new(),
        };
        let mut decoding = Vec::with_capacity(images.len());
        for (i, (name, bytes)) in images.into_iter().enumerate() {
            let pixels = match declared_pixels(&bytes) {
                Some((w, h)) => {
                    let pixels = u64::from(w) * u64::from(h);
                    if pixels > self.config.max_pixels {
                        return Err(Refusal::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            format!(
                                "{}{}",
                                which(i, &name),
                                too_many_pixels(w, h, self.config.max_pixels)
                            ),
                        ));
                    }
                    pixels
                }
                // Not an image, or a header the sniffer cannot read: the decoder says why.
                None => 0,
            };
            let reserved = self.reserved(
                self.decode_budget.reserve(pixels).await,
                "decode budget (--decode-budget)",
            )?;
            let (done, row) = tokio::sync::oneshot::channel();
            let pre: Preprocess = in_service.model.preprocess;
            let max_pixels = self.config.max_pixels;
            rayon::spawn(move || {
                let _ = done.send(decode_image_bytes(&bytes, &pre, max_pixels));
                drop(reserved);
            });
            decoding.push((name, row));
        }
        let mut rows = Vec::with_capacity(decoding.len());
        for (i, (name, row)) in decoding.into_iter().enumerate() {
            match row.await.unwrap_or_else(|_| Err("decoding failed".into())) {
                Ok(r) => rows.push((name, r)),
                Err(reason) => {
                    return Err(Refusal::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("{}{reason}", which(i, &name)),
                    ));
                }
            }
        }
        let mut waiting = Vec::with_capacity(rows.len());
        for (name, row) in rows {
            let answer = in_service.batcher.submit(row).map_err(|_| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy: too many images are waiting for the model; retry in a second",
                )
            })?;
            waiting.push((name, answer));
        }
        let names = &in_service.model.classes.names;
        let mut answers = Vec::with_capacity(waiting.len());
        for (name, answer) in waiting {
            let p: Predictions = answer.await.map_err(|_| {
                Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the model worker stopped before answering",
                )
            })?;
            answers.push(p.to_json(0, names, in_service.top, name.as_deref()));
        }
        Ok(answers)
    }
}

/// The width and height an image's header declares, read without decoding any pixel (so
/// a decompression bomb is weighed before it is opened).
fn declared_pixels(bytes: &[u8]) -> Option<(u32, u32)> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    reader.no_limits();
    reader.into_dimensions().ok()
}

fn too_many_pixels(w: u32, h: u32, max_pixels: u64) -> String {
    format!(
        "image is {w}×{h} ({} megapixels), above the limit of {} megapixels (--max-pixels): \
         shrink it to classify it",
        u64::from(w) * u64::from(h) / 1_000_000,
        max_pixels / 1_000_000
    )
}

/// What a predict body holds, from its `Content-Type`.
enum BodyKind {
    /// One image's bytes.
    Raw,
    /// Several parts, each an image, split by this boundary.
    Multipart(String),
}

impl BodyKind {
    /// Multipart when the `Content-Type` says so; anything else (an image type, none, or
    /// `curl --data-binary`'s default form type) is the image itself, recognised from its
    /// bytes as the loader does.
    fn of(req: &Request<Incoming>) -> Result<Self, Refusal> {
        let Some(text) = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        else {
            return Ok(BodyKind::Raw);
        };
        let essence = text.split(';').next().unwrap_or("").trim();
        if !essence.eq_ignore_ascii_case("multipart/form-data") {
            return Ok(BodyKind::Raw);
        }
        multer::parse_boundary(text)
            .map(BodyKind::Multipart)
            .map_err(|e| {
                Refusal::new(
                    StatusCode::BAD_REQUEST,
                    format!("bad multipart Content-Type: {e}"),
                )
            })
    }
}

/// Every part of a multipart body as (file name, bytes), in order.
async fn read_parts(
    body: Bytes,
    boundary: String,
) -> Result<Vec<(Option<String>, Bytes)>, Refusal> {
    let bad = |e: multer::Error| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            format!("malformed multipart body: {e}"),
        )
    };
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field
            .file_name()
            .or_else(|| field.name())
            .map(str::to_owned);
        let bytes = field.bytes().await.map_err(bad)?;
        if bytes.is_empty() {
            let which = name.as_deref().unwrap_or("unnamed");
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("part {} ({which}) is empty", parts.len() + 1),
            ));
        }
        parts.push((name, bytes));
    }
    if parts.is_empty() {
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            "the multipart body has no parts: add one image per part (curl -F image=@photo.jpg)",
        ));
    }
    Ok(parts)
}

fn with_type(status: StatusCode, body: Bytes, content_type: &'static str) -> Reply {
    let mut reply = Response::new(Full::new(body));
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}

fn json_reply(status: StatusCode, value: &Value) -> Reply {
    with_type(status, Bytes::from(value.to_string()), "application/json")
}

/// The refusal as `{"error": reason}`; a busy server also says when to come back.
fn refuse(refusal: &Refusal) -> Reply {
    let mut reply = json_reply(refusal.status, &json!({"error": refusal.reason}));
    if refusal.status == StatusCode::SERVICE_UNAVAILABLE {
        reply
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    reply
}

/// The header of `POST /api/explain`'s reply that carries the prediction, as JSON.
pub const PREDICTION_HEADER: &str = "x-deepcat-prediction";

impl App {
    /// `POST /api/explain`: one image, as `/api/predict` takes it (the body itself, or a
    /// multipart body with one part), optionally `?class=NAME`; the reply is the overlay PNG
    /// (`deepcat explain`'s), with the prediction as JSON in the `X-Deepcat-Prediction` header
    /// (`/api/predict`'s object plus `explained` and `method`; non-ASCII escaped as `\uXXXX`).
    async fn explain(&self, req: Request<Incoming>) -> Result<Reply, Refusal> {
        let in_service = self.current();
        let class = explained_class(&req, &in_service.model.classes.names)?;
        let kind = BodyKind::of(&req)?;
        let (_body_reserved, body) = self.read_body(req).await?;
        let image = match kind {
            BodyKind::Raw if body.is_empty() => {
                return Err(Refusal::new(
                    StatusCode::BAD_REQUEST,
                    "empty body: send the image's bytes (curl --data-binary @photo.jpg)",
                ));
            }
            BodyKind::Raw => body,
            BodyKind::Multipart(boundary) => {
                let mut parts = read_parts(body, boundary).await?;
                if parts.len() > 1 {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "/api/explain takes one image per request",
                    ));
                }
                parts.pop().map(|(_, b)| b).unwrap_or_default()
            }
        };
        let pixels = match declared_pixels(&image) {
            Some((w, h)) if u64::from(w) * u64::from(h) > self.config.max_pixels => {
                let reason = too_many_pixels(w, h, self.config.max_pixels);
                return Err(Refusal::new(StatusCode::PAYLOAD_TOO_LARGE, reason));
            }
            Some((w, h)) => u64::from(w) * u64::from(h),
            None => 0,
        };
        let reserved = self.reserved(
            self.decode_budget.reserve(pixels).await,
            "decode budget (--decode-budget)",
        )?;
        let (done, answer) = tokio::sync::oneshot::channel();
        let max_pixels = self.config.max_pixels;
        let model = Arc::clone(&in_service.model);
        // Decoding, the backward pass and the drawing are CPU work: off the async threads.
        rayon::spawn(move || {
            let _ = done.send(draw_explanation(&model, &image, class, max_pixels));
            drop(reserved);
        });
        let (png, prediction) = answer
            .await
            .unwrap_or_else(|_| Err("explaining failed".into()))
            .map_err(|reason| Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, reason))?;
        let mut reply = with_type(StatusCode::OK, Bytes::from(png), "image/png");
        let header = HeaderValue::from_str(&ascii_json(&prediction)).map_err(|e| {
            Refusal::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("bad header: {e}"),
            )
        })?;
        reply.headers_mut().insert(PREDICTION_HEADER, header);
        Ok(reply)
    }
}

/// The class `?class=NAME` asks for (an index into `names`), or `None` for the predicted one.
fn explained_class(req: &Request<Incoming>, names: &[String]) -> Result<Option<usize>, Refusal> {
    let Some(query) = req.uri().query() else {
        return Ok(None);
    };
    let Some(wanted) = query.split('&').find_map(|kv| kv.strip_prefix("class=")) else {
        return Ok(None);
    };
    let wanted = percent_decoded(wanted);
    match names.iter().position(|n| *n == wanted) {
        Some(c) => Ok(Some(c)),
        None => Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            format!(
                "class {wanted:?} is not one of the model's classes ({})",
                names.join(", ")
            ),
        )),
    }
}

/// A query value with `%XX` escapes and `+` decoded (invalid escapes kept as they are).
fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes `image`, explains it and draws the overlay: (PNG bytes, the prediction object).
fn draw_explanation(
    model: &crate::model::Model,
    image: &[u8],
    class: Option<usize>,
    max_pixels: u64,
) -> Result<(Vec<u8>, Value), String> {
    use crate::explain::{explain, overlay};
    let (photo, row) = crate::data::decode_photo(image, &model.preprocess, max_pixels)?;
    let e = explain(model, &row, class).map_err(|e| e.to_string())?;
    let png = overlay::png(&overlay::overlay(&photo, &e.heat.map, overlay::MAX_SIDE))?;
    let names = &model.classes.names;
    let mut prediction = e.prediction.to_json(0, names, names.len(), None);
    prediction["explained"] = json!(names[e.heat.class]);
    prediction["method"] = json!(e.heat.method.name());
    Ok((png, prediction))
}

/// `value` as JSON with every non-ASCII character escaped (`\uXXXX`), so it fits in a header.
fn ascii_json(value: &Value) -> String {
    let mut out = String::new();
    for c in value.to_string().chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod explain_tests {
    use super::*;

    #[test]
    fn header_json_is_ascii_and_still_the_same_json() {
        let v = json!({"class": "chat noir — 猫 🐈"});
        let text = ascii_json(&v);
        assert!(text.is_ascii(), "{text}");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), v);
        assert!(HeaderValue::from_str(&text).is_ok());
    }

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decoded("non-cat"), "non-cat");
        assert_eq!(percent_decoded("big+cat%2Fdog%zz"), "big cat/dog%zz");
        assert_eq!(percent_decoded("%E7%8C%AB"), "猫");
    }
}
