//! Which stored images `imgadm vacuum` may delete.
//!
//! An image is kept when an instance of the pool uses it, whatever the instance's
//! state (a stopped zone still runs from its image's tree), or when it is the `origin`
//! of another stored image (SmartOS keeps those too: deleting a parent under its child
//! would orphan the child's lineage).

use std::collections::BTreeSet;

use uuid::Uuid;

use crate::error::StoreError;
use crate::store::{instances_using, Image, ImageStore};

/// The manifest member naming the image an image was made from.
const ORIGIN: &str = "origin";

/// The `origin` of `image`'s manifest, when it names a UUID.
pub fn origin_of(image: &Image) -> Option<Uuid> {
    image
        .manifest
        .extra
        .get(ORIGIN)
        .and_then(|v| v.as_str())
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// The stored images no instance uses and no other stored image has as its origin.
pub(crate) fn unused(store: &ImageStore) -> Result<Vec<Image>, StoreError> {
    let mut keep: BTreeSet<Uuid> = instances_using(store.pool())?.into_keys().collect();
    keep.extend(spec_images(store));
    let images = store.list()?;
    keep.extend(images.iter().filter_map(origin_of));
    Ok(images
        .into_iter()
        .filter(|i| !keep.contains(&i.uuid))
        .collect())
}

/// Images named by UUID in the specs of instances whose record does not yet say
/// which image they were provisioned from (an instance being created).
fn spec_images(store: &ImageStore) -> Vec<Uuid> {
    let (records, _) = spec::pool::load_records(store.pool());
    records
        .into_iter()
        .filter(|r| r.image_uuid.is_empty())
        .filter_map(|r| match r.spec.image {
            spec::ImageRef::Uuid(u) => Some(u),
            _ => None,
        })
        .collect()
}
