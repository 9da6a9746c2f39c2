//! The fake's images service: records by name, each change published as containerd publishes it.

use super::{invalid_filter, set_labels, Fake};
use crate::containerd::{
    ContainerdError, Event, ImageRecord, ImageTarget, Images, LabelChanges, Labels, Result,
};
use crate::error::Class;
use crate::filters::{map_field, Adaptor, Filter};
use std::collections::HashMap;

impl Adaptor for ImageRecord {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str) {
            Some("name") => Some(self.name.clone()),
            Some("target") => match path.get(1).map(String::as_str) {
                Some("digest") => Some(self.digest.clone()),
                Some("mediatype") => Some(self.media_type.clone()),
                _ => None,
            },
            Some("labels") => map_field(&path[1..], &self.labels),
            _ => None,
        }
    }
}

#[async_trait::async_trait]
impl Images for Fake {
    async fn get_image(&self, name: &str) -> Result<Option<ImageRecord>> {
        self.enter("get_image", name)?;
        Ok(self.state().images.get(name).cloned())
    }

    async fn list_images(&self, filters: Vec<String>) -> Result<Vec<ImageRecord>> {
        self.enter("list_images", filters.join(","))?;
        let f = Filter::parse(&filters).map_err(invalid_filter)?;
        Ok(self
            .state()
            .images
            .values()
            .filter(|i| f.matches(*i))
            .cloned()
            .collect())
    }

    async fn put_image(&self, image: &ImageTarget, labels: &Labels) -> Result<()> {
        self.enter("put_image", image.name.clone())?;
        let mut s = self.state();
        let created = !s.images.contains_key(&image.name);
        let record = s
            .images
            .entry(image.name.clone())
            .or_insert_with(|| ImageRecord {
                name: image.name.clone(),
                media_type: String::new(),
                digest: String::new(),
                size: 0,
                labels: HashMap::new(),
            });
        record.media_type = image.media_type.clone();
        record.digest = image.digest.clone();
        record.size = image.size;
        set_labels(&mut record.labels, labels);
        let (name, labels) = (image.name.clone(), record.labels.clone());
        s.publish(if created {
            Event::ImageCreated { name, labels }
        } else {
            Event::ImageUpdated { name, labels }
        });
        Ok(())
    }

    async fn delete_image(&self, name: &str, digest: &str) -> Result<()> {
        self.enter("delete_image", name)?;
        let mut s = self.state();
        match s.images.get(name) {
            None => Ok(()),
            Some(r) if r.digest != digest => Err(ContainerdError::call(
                format!("delete image {name}"),
                Class::FailedPrecondition,
                "image target does not match",
            )),
            Some(_) => {
                s.images.remove(name);
                s.publish(Event::ImageDeleted {
                    name: name.to_string(),
                });
                Ok(())
            }
        }
    }

    async fn set_image_labels(&self, image: &ImageRecord, labels: &LabelChanges) -> Result<()> {
        self.enter("set_image_labels", image.name.clone())?;
        let mut s = self.state();
        let record = s.images.get_mut(&image.name).ok_or_else(|| {
            ContainerdError::call(
                format!("label image {}", image.name),
                Class::NotFound,
                "not found",
            )
        })?;
        for (k, v) in labels {
            match v {
                Some(v) if !v.is_empty() => record.labels.insert(k.clone(), v.clone()),
                _ => record.labels.remove(k),
            };
        }
        let event = Event::ImageUpdated {
            name: image.name.clone(),
            labels: record.labels.clone(),
        };
        s.publish(event);
        Ok(())
    }
}
