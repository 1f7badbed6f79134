//! Admin: `POST /api/miner/start`, `POST /api/miner/stop`.

use hyper::StatusCode;
use vision_wire::{MinerControlResponse, MinerStartRequest};

use super::{Api, parse_json};
use crate::http::{ApiError, Request, Response, json_response};

impl Api {
    pub(super) fn miner_start(&self, req: &Request) -> Result<Response, ApiError> {
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
        self.0.invalidate_status();
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

    pub(super) fn miner_stop(&self, req: &Request) -> Result<Response, ApiError> {
        self.authorize_admin(req)?;
        self.0.miner.stop();
        self.0.invalidate_status();
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
}
