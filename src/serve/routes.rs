//! The server's routes: each request becomes one response, and every failure a 4xx or 5xx
//! with a JSON body `{"error": "<reason>"}`. Nothing here can stop the server.

use super::ServeConfig;
use super::batcher::Batcher;
use crate::data::{Preprocess, decode_image_bytes};
use crate::model::{Model, Predictions};
use crate::model_file::ModelFile;
use crate::nn::spec::describe;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

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

/// What every request shares: the model, its queue and the limits.
pub(super) struct App {
    model: Arc<Model>,
    batcher: Batcher,
    /// `GET /api/model`'s body, built once.
    metadata: Bytes,
    /// The `top` of each answer: as `deepcat predict`'s default.
    top: usize,
    max_upload: u64,
    body_timeout: Duration,
    max_pixels: u64,
}

impl App {
    pub(super) fn new(
        file: &ModelFile,
        model: Arc<Model>,
        batcher: Batcher,
        config: &ServeConfig,
    ) -> Self {
        let classes = model.classes.len();
        App {
            metadata: Bytes::from(metadata(file, config).to_string()),
            top: if classes == 2 { 2 } else { 3.min(classes) },
            model,
            batcher,
            max_upload: config.max_upload,
            body_timeout: config.body_timeout,
            max_pixels: config.max_pixels,
        }
    }

    /// Routes one request.
    pub(super) async fn handle(&self, req: Request<Incoming>) -> Reply {
        let path = req.uri().path();
        let allowed = match path {
            "/" | "/index.html" | "/healthz" | "/api/model" => Method::GET,
            "/api/predict" => Method::POST,
            _ => {
                let reason =
                    format!("no route {path} (try /, /api/predict, /api/model or /healthz)");
                return refuse(&Refusal::new(StatusCode::NOT_FOUND, reason));
            }
        };
        if req.method() != allowed {
            let reason = format!("{} does not take {}; use {allowed}", path, req.method());
            let mut reply = refuse(&Refusal::new(StatusCode::METHOD_NOT_ALLOWED, reason));
            let allow = if allowed == Method::GET {
                "GET"
            } else {
                "POST"
            };
            reply
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
            return reply;
        }
        match path {
            "/healthz" => json_reply(StatusCode::OK, &json!({"status": "ok"})),
            "/api/model" => with_type(StatusCode::OK, self.metadata.clone(), "application/json"),
            "/api/predict" => match self.predict(req).await {
                Ok(answer) => json_reply(StatusCode::OK, &answer),
                Err(refusal) => refuse(&refusal),
            },
            _ => with_type(
                StatusCode::OK,
                Bytes::from_static(PAGE.as_bytes()),
                "text/html; charset=utf-8",
            ),
        }
    }

    /// `POST /api/predict`: one raw image, or every part of a multipart body.
    async fn predict(&self, req: Request<Incoming>) -> Result<Value, Refusal> {
        let kind = BodyKind::of(&req)?;
        let body = self.read_body(req).await?;
        match kind {
            BodyKind::Raw => {
                if body.is_empty() {
                    return Err(Refusal::new(
                        StatusCode::BAD_REQUEST,
                        "empty body: send the image's bytes (curl --data-binary @photo.jpg)",
                    ));
                }
                let mut answers = self.classify(vec![(None, body)]).await?;
                Ok(answers.pop().unwrap_or(Value::Null))
            }
            BodyKind::Multipart(boundary) => {
                let parts = read_parts(body, boundary).await?;
                let answers = self.classify(parts).await?;
                Ok(json!({ "predictions": answers }))
            }
        }
    }

    /// The body, refused past the upload limit or the body timeout.
    async fn read_body(&self, req: Request<Incoming>) -> Result<Bytes, Refusal> {
        let too_large = || {
            Refusal::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "body is larger than the upload limit of {} bytes (--max-upload)",
                    self.max_upload
                ),
            )
        };
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_upload) {
            return Err(too_large());
        }
        let limit = usize::try_from(self.max_upload).unwrap_or(usize::MAX);
        let reading = Limited::new(req.into_body(), limit).collect();
        match tokio::time::timeout(self.body_timeout, reading).await {
            Err(_) => Err(Refusal::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s",
                    self.body_timeout.as_secs_f64()
                ),
            )),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Ok(Err(e)) => Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the body: {e}"),
            )),
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
        }
    }

    /// Decodes every image in parallel, queues the rows for the batch worker and returns one
    /// prediction object per image, in order. `images` are (file name, bytes).
    async fn classify(&self, images: Vec<(Option<String>, Bytes)>) -> Result<Vec<Value>, Refusal> {
        let several = images.len() > 1;
        let decoding: Vec<_> = images
            .into_iter()
            .map(|(name, bytes)| {
                let (done, row) = tokio::sync::oneshot::channel();
                let pre: Preprocess = self.model.preprocess;
                let max_pixels = self.max_pixels;
                rayon::spawn(move || {
                    let _ = done.send(decode_image_bytes(&bytes, &pre, max_pixels));
                });
                (name, row)
            })
            .collect();
        let mut rows = Vec::with_capacity(decoding.len());
        for (i, (name, row)) in decoding.into_iter().enumerate() {
            let row = row.await.unwrap_or_else(|_| Err("decoding failed".into()));
            match row {
                Ok(r) => rows.push((name, r)),
                Err(reason) => {
                    let which = match (&name, several) {
                        (Some(n), _) => format!("part {} ({n}): ", i + 1),
                        (None, true) => format!("part {}: ", i + 1),
                        (None, false) => String::new(),
                    };
                    return Err(Refusal::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("{which}{reason}"),
                    ));
                }
            }
        }
        let mut waiting = Vec::with_capacity(rows.len());
        for (name, row) in rows {
            let answer = self.batcher.submit(row).map_err(|_| {
                Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "busy: too many images are waiting for the model; retry in a second",
                )
            })?;
            waiting.push((name, answer));
        }
        let names = &self.model.classes.names;
        let mut answers = Vec::with_capacity(waiting.len());
        for (name, answer) in waiting {
            let p: Predictions = answer.await.map_err(|_| {
                Refusal::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the model worker stopped before answering",
                )
            })?;
            answers.push(p.to_json(0, names, self.top, name.as_deref()));
        }
        Ok(answers)
    }
}

/// What a predict body holds, from its `Content-Type`.
enum BodyKind {
    /// One image's bytes.
    Raw,
    /// Several parts, each an image, split by this boundary.
    Multipart(String),
}

impl BodyKind {
    fn of(req: &Request<Incoming>) -> Result<Self, Refusal> {
        let wrong = |got: &str| {
            Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Content-Type {got} is not accepted: send image/* or \
                     application/octet-stream with the image as the body, or \
                     multipart/form-data with one part per image"
                ),
            )
        };
        let Some(value) = req.headers().get(header::CONTENT_TYPE) else {
            return Err(wrong("(none)"));
        };
        let text = value.to_str().map_err(|_| wrong("(not text)"))?;
        let essence = text
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence == "multipart/form-data" {
            return multer::parse_boundary(text)
                .map(BodyKind::Multipart)
                .map_err(|e| {
                    Refusal::new(
                        StatusCode::BAD_REQUEST,
                        format!("bad multipart Content-Type: {e}"),
                    )
                });
        }
        if essence.starts_with("image/") || essence == "application/octet-stream" {
            Ok(BodyKind::Raw)
        } else {
            Err(wrong(text))
        }
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

/// `GET /api/model`: classes, preprocessing, architecture, parameter counts, how the model
/// was trained (as saved) and the limits of this server.
fn metadata(file: &ModelFile, config: &ServeConfig) -> Value {
    let model = &file.model;
    let summary = model.network.summary();
    let test_accuracy = file
        .training
        .as_ref()
        .and_then(|t| t.get("test_accuracy"))
        .cloned()
        .unwrap_or(Value::Null);
    json!({
        "classes": model.classes.names,
        "positive": model.classes.positive_name(),
        "image_size": model.preprocess.size,
        "preprocessing": {
            "size": model.preprocess.size,
            "resize": model.preprocess.filter.name(),
            "exif_orientation": model.preprocess.exif_orientation,
            "pixel_layout": "hwc_rgb",
            "normalisation": "divide_by_255",
        },
        "architecture": describe(&model.network.architecture().body),
        "head": summary.head,
        "summary": summary,
        "parameters": summary.trainable() + summary.non_trainable(),
        "trainable": summary.trainable(),
        "non_trainable": summary.non_trainable(),
        "training": file.training,
        "test_accuracy": test_accuracy,
        "limits": {
            "max_upload_bytes": config.max_upload,
            "max_pixels": config.max_pixels,
            "max_batch": super::MAX_BATCH,
        },
    })
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
