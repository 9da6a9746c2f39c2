//! [`Images`] over containerd's images service.

use super::{unless, Grpc};
use crate::containerd::{
    ContainerdError, ImageRecord, ImageTarget, Images, LabelChanges, Labels, Result,
};
use crate::error::Class;
use containerd_client::services::v1 as api;

impl Grpc {
    /// Updates the fields `paths` of an image record to `image`'s.
    async fn update_image(&self, image: api::Image, paths: Vec<String>, op: &str) -> Result<()> {
        let name = image.name.clone();
        self.images()
            .update(self.request(api::UpdateImageRequest {
                image: Some(image),
                update_mask: Some(prost_types::FieldMask { paths }),
                ..Default::default()
            }))
            .await
            .map_err(|s| ContainerdError::from_status(format!("{op} {name}"), &s))?;
        Ok(())
    }
}

fn descriptor(image: &ImageTarget) -> containerd_client::types::Descriptor {
    containerd_client::types::Descriptor {
        media_type: image.media_type.clone(),
        digest: image.digest.clone(),
        size: image.size,
        annotations: image.annotations.clone().into_iter().collect(),
    }
}

fn image_record(i: api::Image) -> ImageRecord {
    let t = i.target.unwrap_or_default();
    ImageRecord {
        name: i.name,
        media_type: t.media_type,
        digest: t.digest,
        size: t.size,
        labels: i.labels,
    }
}

#[async_trait::async_trait]
impl Images for Grpc {
    async fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        let r = self
            .images()
            .get(self.request(api::GetImageRequest {
                name: name.to_string(),
            }))
            .await;
        Ok(unless(r, Class::NotFound, || format!("get image {name}"))?
            .and_then(|r| r.into_inner().image.map(image_record)))
    }

    async fn list_images(&self, filters: Vec<String>) -> Result<Vec<ImageRecord>> {
        let resp = self
            .images()
            .list(self.request(api::ListImagesRequest { filters }))
            .await
            .map_err(|s| ContainerdError::from_status("list images", &s))?
            .into_inner();
        Ok(resp.images.into_iter().map(image_record).collect())
    }

    async fn put_image(&self, image: &ImageTarget, labels: &Labels) -> Result<()> {
        let name = &image.name;
        let record = api::Image {
            name: name.clone(),
            labels: labels.clone().into_iter().collect(),
            target: Some(descriptor(image)),
            ..Default::default()
        };
        let mut client = self.images();
        // New names are the common case: create first, update when the name exists.
        let created = client
            .create(self.request(api::CreateImageRequest {
                image: Some(record.clone()),
                ..Default::default()
            }))
            .await;
        if unless(created, Class::AlreadyExists, || {
            format!("create image {name}")
        })?
        .is_some()
        {
            return Ok(());
        }
        let mut paths = vec!["target".to_string()];
        paths.extend(labels.keys().map(|k| format!("labels.{k}")));
        self.update_image(record, paths, "update image").await
    }

    async fn delete_image(&self, name: &str, digest: &str) -> Result<()> {
        let r = self
            .images()
            .delete(self.request(api::DeleteImageRequest {
                name: name.to_string(),
                sync: false,
                target: Some(containerd_client::types::Descriptor {
                    digest: digest.to_string(),
                    ..Default::default()
                }),
            }))
            .await;
        unless(r, Class::NotFound, || format!("delete image {name}"))?;
        Ok(())
    }

    async fn set_image_labels(&self, image: &ImageRecord, labels: &LabelChanges) -> Result<()> {
        let name = &image.name;
        // The current target is sent along: containerd dereferences it even when only labels
        // are updated (an update without a target crashes containerd 1.7 and 2.1).
        let update = api::Image {
            name: name.clone(),
            labels: labels
                .iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
                .collect(),
            target: Some(containerd_client::types::Descriptor {
                media_type: image.media_type.clone(),
                digest: image.digest.clone(),
                size: image.size,
                annotations: Default::default(),
            }),
            ..Default::default()
        };
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        self.update_image(update, paths, "label image").await
    }
}
