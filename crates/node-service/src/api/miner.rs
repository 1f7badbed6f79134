//! Admin: `POST /api/miner/start`, `POST /api/miner/stop`.

use hyper::StatusCode;
use vision_wire::{MinerControlResponse, MinerStartRequest};

use super::{Api, blocking, parse_json};
use crate::http::{ApiError, Request, Response, json_response};

impl Api {
    pub(super) async fn miner_start(&self, req: &Request) -> Result<Response, ApiError> {
        self.authorize_admin(req)?;
        let body: MinerStartRequest = if req.body.iter().all(u8::is_ascii_whitespace) {
            MinerStartRequest::default()
        } else {
            parse_json(&req.body)?
        };
        if body.threads == Some(0) {
            return Err(ApiError::bad_request("threads must be at least 1"));
        }
        let cap = miner_core::threads_cap();
        if let Some(t) = body.threads
            && t > cap
        {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "threads_over_cap",
                format!(
                    "threads {t} is more than the cap of {cap} on this machine ({} per core, at most {})",
                    miner_core::THREADS_PER_CORE_MAX,
                    miner_core::THREADS_MAX
                ),
            ));
        }
        let miner = &self.0.miner;
        let threads = body.threads.unwrap_or_else(|| miner.status().threads);
        miner.start(threads);
        self.refresh_status_off_runtime().await?;
        let st = miner.status();
        Ok(json_response(
            StatusCode::ACCEPTED,
            &MinerControlResponse {
                accepted: true,
                enabled_by_user: true,
                threads: st.threads,
                message: "Mining enabled - will start when conditions allow".into(),
            },
        ))
    }

    pub(super) async fn miner_stop(&self, req: &Request) -> Result<Response, ApiError> {
        self.authorize_admin(req)?;
        self.0.miner.stop();
        self.refresh_status_off_runtime().await?;
        let st = self.0.miner.status();
        Ok(json_response(
            StatusCode::ACCEPTED,
            &MinerControlResponse {
                accepted: true,
                enabled_by_user: false,
                threads: st.threads,
                message: "Mining stopped".into(),
            },
        ))
    }

    /// Publish a new view before answering (the next status read shows the change),
    /// on the blocking pool: the refresh reads the store, which waits while a store
    /// repair holds it.
    async fn refresh_status_off_runtime(&self) -> Result<(), ApiError> {
        let shared = self.0.clone();
        blocking(move || shared.invalidate_status()).await
    }
}
