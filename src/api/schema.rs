//! Schema helpers shared by the API types.

use schemars::{Schema, SchemaGenerator, json_schema};

/// DNS-1123 label: what Kubernetes accepts as most object names and what our
/// child names are built from.
pub const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A label value, since versions end up as labels on every child object.
pub const LABEL_VALUE_PATTERN: &str = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$";

/// An http(s) URL; other schemes are rejected by the API server.
pub const HTTP_URL_PATTERN: &str = r"^https?://[^\s/?#]+([/?#]\S*)?$";

/// A tcp URL (`tcp://host:port`).
pub const TCP_URL_PATTERN: &str = r"^tcp://[^\s/?#:]+:[0-9]{1,5}$";

// Embedded Kubernetes specs (a JobSpec, a PodTemplateSpec) get a skeleton
// schema in the CRD: their full schemas would multiply the CRD past what etcd
// stores comfortably. The skeleton still makes the API server reject a
// template without containers; the controller decodes the rest into the real
// types and reports a precise `Stalled` reason when that fails, and the API
// server validates them again when the child object is created.

use std::{borrow::Cow, fmt, marker::PhantomData};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// A Kubernetes object spec embedded in a Release (a `batch/v1` JobSpec, a
/// `core/v1` PodTemplateSpec), kept as written and decoded on demand so that a
/// mistake in it names the exact path instead of failing the whole object.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Embedded<T> {
    raw: serde_json::Map<String, serde_json::Value>,
    #[serde(skip)]
    kind: PhantomData<fn() -> T>,
}

impl<T> Default for Embedded<T> {
    fn default() -> Self {
        Self {
            raw: serde_json::Map::new(),
            kind: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Embedded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.raw.fmt(f)
    }
}

impl<T: Serialize> Embedded<T> {
    /// Wraps a typed value.
    pub fn from_typed(value: &T) -> Self {
        let raw = match serde_json::to_value(value) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        Self {
            raw,
            kind: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Embedded<T> {
    /// Decodes the embedded spec; the error names the offending path below it.
    pub fn decode(&self) -> Result<T, String> {
        let value = serde_json::Value::Object(self.raw.clone());
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.into_inner().to_string()
            } else {
                format!("{path}: {}", e.into_inner())
            }
        })
    }
}

impl<T> Embedded<T> {
    /// The spec as written.
    pub fn raw(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.raw
    }
}

/// A container list that must not be empty, each container naming itself;
/// everything else about a container is left to the API server's own
/// validation when the child object is created.
fn containers_skeleton() -> serde_json::Value {
    serde_json::json!({
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "minLength": 1, "maxLength": 63},
                "image": {"type": "string"},
            },
            "x-kubernetes-preserve-unknown-fields": true,
        },
    })
}

/// A pod template skeleton: opaque apart from the containers.
fn pod_template_skeleton() -> serde_json::Value {
    serde_json::json!({
        "type": "object",
        "required": ["spec"],
        "properties": {
            "metadata": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            "spec": {
                "type": "object",
                "required": ["containers"],
                "properties": {"containers": containers_skeleton()},
                "x-kubernetes-preserve-unknown-fields": true,
            },
        },
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

fn skeleton_schema(value: serde_json::Value) -> Schema {
    Schema::try_from(value).unwrap_or_else(
        |_| json_schema!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}),
    )
}

impl JsonSchema for Embedded<k8s_openapi::api::core::v1::PodTemplateSpec> {
    fn schema_name() -> Cow<'static, str> {
        "EmbeddedPodTemplateSpec".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        skeleton_schema(pod_template_skeleton())
    }
}

impl JsonSchema for Embedded<k8s_openapi::api::batch::v1::JobSpec> {
    fn schema_name() -> Cow<'static, str> {
        "EmbeddedJobSpec".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        skeleton_schema(serde_json::json!({
            "type": "object",
            "required": ["template"],
            "properties": {"template": pod_template_skeleton()},
            "x-kubernetes-preserve-unknown-fields": true,
        }))
    }
}
