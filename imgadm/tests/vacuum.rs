//! `vacuum` on a real store: what instances of the pool use (in any state, or named
//! by the spec of one being provisioned) and what is the origin of another stored
//! image stays; the rest goes, and a dry run deletes nothing.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use common::*;
use imgadm::{Compression, ImageKind, ImageStore};
use uuid::Uuid;

/// Installs a one-file zone dataset named `name`, made from `origin` when given.
fn install(store: &ImageStore, name: &str, origin: Option<Uuid>) -> Uuid {
    let tar = tarball(
        &[
            Entry::Dir("./", 0o755),
            Entry::File("./hello", name.as_bytes(), 0o644),
        ],
        (0, 0),
    );
    let mut m = manifest_for(&tar, name, "1", ImageKind::ZoneDataset, Compression::None);
    if let Some(o) = origin {
        m.extra.insert("origin".into(), o.to_string().into());
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("image");
    fs::write(&f, &tar).unwrap();
    store.install_file(&m, &f).unwrap().uuid
}

/// Writes the state record init keeps for an instance `name` of `image`.
fn record(pool: &Path, name: &str, spec_image: Uuid, image_uuid: Option<Uuid>, state: spec::State) {
    let uuid = Uuid::new_v4().to_string();
    fs::create_dir(spec::pool::instance_dir(pool, &uuid)).unwrap();
    let rec = spec::pool::InstanceRecord {
        image_uuid: image_uuid.map(|u| u.to_string()).unwrap_or_default(),
        state,
        ..spec::pool::InstanceRecord::provisioning(
            uuid.clone(),
            spec::InstanceSpec::zone(name, spec::ImageRef::Uuid(spec_image)),
        )
    };
    fs::write(
        spec::pool::state_path(pool, &uuid),
        serde_json::to_string(&rec).unwrap(),
    )
    .unwrap();
}

fn uuids(images: &[imgadm::Image]) -> BTreeSet<Uuid> {
    images.iter().map(|i| i.uuid).collect()
}

#[test]
fn keeps_what_instances_and_child_images_use_and_deletes_the_rest() {
    let pool = pool();
    let store = ImageStore::open(pool.path()).unwrap().without_progress();
    let of_stopped = install(&store, "stopped", None);
    let of_running = install(&store, "running", None);
    let of_new = install(&store, "provisioning", None);
    let parent = install(&store, "parent", None);
    let child = install(&store, "child", Some(parent));
    let lone = install(&store, "lone", None);
    record(
        pool.path(),
        "z1",
        of_stopped,
        Some(of_stopped),
        spec::State::Stopped,
    );
    record(
        pool.path(),
        "z2",
        of_running,
        Some(of_running),
        spec::State::Running,
    );
    record(pool.path(), "z3", of_new, None, spec::State::Provisioning);

    let would = store.vacuum(true).unwrap();
    assert_eq!(uuids(&would), BTreeSet::from([child, lone]));
    assert_eq!(store.list().unwrap().len(), 6, "the dry run deleted");

    let gone = store.vacuum(false).unwrap();
    assert_eq!(uuids(&gone), BTreeSet::from([child, lone]));
    let left = uuids(&store.list().unwrap());
    assert_eq!(
        left,
        BTreeSet::from([of_stopped, of_running, of_new, parent])
    );
    for u in [child, lone] {
        assert!(!store.image_dir(&u).exists(), "{u} left on disk");
    }
    // The parent is no longer anyone's origin: the next vacuum takes it.
    let gone = store.vacuum(false).unwrap();
    assert_eq!(uuids(&gone), BTreeSet::from([parent]));
}
