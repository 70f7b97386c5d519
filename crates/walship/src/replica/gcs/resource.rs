//! The JSON API's resources: the object resource an upload sends, and the object and listing
//! resources GCS answers with.

use std::time::SystemTime;

use object_store::client::HttpResponse;
use object_store::path::Path;
use object_store::{Attribute, AttributeValue, Attributes, ObjectMeta, PutResult};
use serde::Deserialize;

use super::error::{to_store_error, GcsError, Target};
use crate::replica::timestamp;

/// The JSON object resource of an upload: its name and custom metadata.
pub(super) fn resource(name: &str, attributes: &Attributes) -> serde_json::Value {
    let mut metadata = serde_json::Map::new();
    let mut resource = serde_json::Map::new();
    resource.insert("name".into(), name.into());
    for (key, value) in attributes {
        match key {
            Attribute::Metadata(key) => {
                metadata.insert(key.to_string(), value.as_ref().into());
            }
            Attribute::ContentType => {
                resource.insert("contentType".into(), value.as_ref().into());
            }
            Attribute::CacheControl => {
                resource.insert("cacheControl".into(), value.as_ref().into());
            }
            _ => {}
        }
    }
    if !metadata.is_empty() {
        resource.insert("metadata".into(), metadata.into());
    }
    resource.into()
}

/// The JSON body of a successful answer about `location`.
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(
    response: HttpResponse,
    location: &str,
) -> object_store::Result<T> {
    let decode = |cause: String| to_store_error(location, Target::Object, GcsError::Decode(cause));
    let body = response
        .into_body()
        .bytes()
        .await
        .map_err(|e| decode(e.to_string()))?;
    serde_json::from_slice(&body).map_err(|e| decode(e.to_string()))
}

/// An object as the JSON API describes it (the fields walship uses).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ObjectResource {
    name: String,
    /// A decimal string, as the JSON API writes 64-bit numbers.
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    updated: Option<String>,
    #[serde(default)]
    time_created: Option<String>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    generation: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    content_type: Option<String>,
}

impl ObjectResource {
    /// The object's metadata as object_store describes it.
    pub(super) fn meta(&self) -> object_store::Result<ObjectMeta> {
        let location = Path::parse(&self.name)?;
        let modified = self
            .updated
            .as_deref()
            .or(self.time_created.as_deref())
            .and_then(timestamp::parse_rfc3339)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(ObjectMeta {
            location,
            last_modified: modified.into(),
            size: self
                .size
                .as_deref()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            e_tag: self.etag.clone(),
            version: self.generation.clone(),
        })
    }

    /// The object's custom metadata and content type.
    pub(super) fn attributes(&self) -> Attributes {
        let mut attributes = Attributes::new();
        for (key, value) in self.metadata.iter().flatten() {
            if let Some(value) = value.as_str() {
                attributes.insert(
                    Attribute::Metadata(key.clone().into()),
                    AttributeValue::from(value.to_string()),
                );
            }
        }
        if let Some(content_type) = &self.content_type {
            attributes.insert(Attribute::ContentType, content_type.clone().into());
        }
        attributes
    }

    /// What object_store reports of a finished upload of this object.
    pub(super) fn put_result(&self) -> PutResult {
        PutResult {
            e_tag: self.etag.clone(),
            version: self.generation.clone(),
            extensions: Default::default(),
        }
    }
}

/// One page of a listing.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ListPage {
    /// The objects on this page.
    #[serde(default)]
    pub(super) items: Vec<ObjectResource>,
    /// The "directories" under the prefix, each ending in `/`, when listed with a delimiter.
    #[serde(default)]
    pub(super) prefixes: Vec<String>,
    /// The token of the next page; `None` on the last.
    #[serde(default)]
    pub(super) next_page_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica::client::TIMESTAMP_METADATA_KEY;

    #[test]
    fn upload_resources_carry_metadata() {
        let mut attributes = Attributes::new();
        attributes.insert(
            Attribute::Metadata(TIMESTAMP_METADATA_KEY.into()),
            "2023-11-14T22:13:20.123Z".into(),
        );
        let json = resource("db/ltx/0/x.ltx", &attributes);
        assert_eq!(
            json,
            serde_json::json!({"name": "db/ltx/0/x.ltx",
                "metadata": {"litestream-timestamp": "2023-11-14T22:13:20.123Z"}})
        );
    }
}
