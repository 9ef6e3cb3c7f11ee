//! The image store seen from the runtime: pulls (detached), and removal
//! and garbage collection that spare what a space uses.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::image::{Image, ImageStore, ProgressFn, Puller};

use super::registry::lock;
use super::{blocking, Runtime};

impl Runtime {
    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.inner.images
    }

    /// Pulls an image from its registry into the store (always asks the
    /// registry; layers already stored are not downloaded again).
    pub async fn pull(&self, reference: &str, progress: Option<ProgressFn>) -> Result<Image> {
        let reference = reference.to_string();
        self.detached(move |rt| async move { rt.inner.puller.pull(&reference, progress).await })
            .await
    }

    /// The stored image `reference`, pulled first if it is not stored.
    pub async fn ensure_image(&self, reference: &str) -> Result<Image> {
        let (images, r) = (self.inner.images.clone(), reference.to_string());
        match blocking("reading the image store", move || images.get(&r)).await? {
            Some(img) => Ok(img),
            None => self.pull(reference, None).await,
        }
    }

    /// The puller (download counters for tests and metrics).
    pub fn puller(&self) -> &Puller {
        &self.inner.puller
    }

    /// Removes an image unless a space uses it. Blocking.
    pub fn remove_image(&self, reference: &str) -> Result<()> {
        let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.values().find(|e| lock(&e.rec).image == reference) {
            return Err(Error::ImageInUse(
                reference.to_string(),
                lock(&e.rec).name.clone(),
            ));
        }
        self.inner.images.remove(reference)
    }

    /// Deletes stored layers that no image and no space uses; returns how
    /// many. Blocking.
    pub fn gc_images(&self) -> Result<usize> {
        let map = self.inner.spaces.read().unwrap_or_else(|p| p.into_inner());
        let in_use: Vec<PathBuf> = map
            .values()
            .flat_map(|e| lock(&e.rec).layers.clone())
            .collect();
        self.inner.images.gc(&in_use)
    }
}
