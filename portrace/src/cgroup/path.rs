//! Reads a cgroup v2 path the way a person would: the systemd unit, the user whose
//! session or user manager it is, the container and the runtime that made it, the
//! Kubernetes pod. Pure: it looks only at the path's text, which is someone else's (any
//! process allowed to make cgroups names them), so nothing here trusts its shape: a name
//! that does not look exactly like a runtime's is not taken for one.
//!
//! The shapes read (systemd cgroup driver, then cgroupfs driver):
//! - `/system.slice/nginx.service`, `/user.slice/user-1000.slice/session-3.scope`,
//!   `/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope`;
//! - `/system.slice/docker-<id>.scope`, `/docker/<id>`;
//! - `cri-containerd-<id>.scope` (containerd), `crio-<id>.scope` and `crio-conmon-<id>.scope`
//!   (CRI-O), `libpod-<id>.scope` and `libpod-conmon-<id>.scope` (podman);
//! - `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/...` (the
//!   pod's UID with `_` for `-`), and `/kubepods/burstable/pod<uid>/<id>`.

/// What a cgroup path says about the processes in it. Every field is `None` when the path
/// does not say.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The innermost systemd unit: a service or a scope (`nginx.service`,
    /// `session-3.scope`, `docker-<id>.scope`).
    pub unit: Option<String>,
    /// The user a `user-UID.slice` or `user@UID.service` names: the unit is a session's or
    /// that user's own (`systemctl --user`).
    pub user: Option<u32>,
    pub container: Option<Container>,
    /// The Kubernetes pod's UID, with dashes (as `kubectl get pod -o jsonpath='{.metadata.uid}'`
    /// shows it).
    pub pod: Option<String>,
}

/// A container named by its cgroup.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Container {
    pub runtime: Runtime,
    /// The container's id, in lowercase hex as the runtime shows it (`docker ps` shows the
    /// first 12 characters).
    pub id: String,
    /// The cgroup is the container's monitor process (`conmon`), not the container itself.
    pub monitor: bool,
}

/// The software that made a container's cgroup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    Docker,
    Containerd,
    CriO,
    Podman,
    /// A container in a Kubernetes pod whose cgroup does not name its runtime (the
    /// cgroupfs driver: `/kubepods/<class>/pod<uid>/<id>`).
    Kubernetes,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
            Runtime::Kubernetes => "kubernetes",
        }
    }
}

impl Identity {
    /// A short label for people: the container (runtime and 12-character id), else the
    /// unit; the pod first when there is one. `None` when the path names nothing.
    pub fn label(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(pod) = &self.pod {
            parts.push(format!("pod {}", short(pod, 8)));
        }
        match (&self.container, &self.unit) {
            (Some(c), _) => {
                let what = if c.monitor { " conmon" } else { "" };
                parts.push(format!("{} {}{what}", c.runtime.name(), short(&c.id, 12)));
            }
            (None, Some(unit)) => parts.push(unit.clone()),
            (None, None) => {}
        }
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

fn short(id: &str, n: usize) -> &str {
    id.get(..n).unwrap_or(id)
}

/// Container ids: 64 hex digits for every runtime read here; shorter ones (at least 12)
/// are accepted for `/docker/<id>` paths made by hand or by older tools.
fn container_id(text: &str) -> Option<String> {
    ((12..=64).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())).then(|| text.to_ascii_lowercase())
}

/// A pod UID as the kubelet writes it in a path: 32 hex digits in the 8-4-4-4-12 groups,
/// joined with `-` (cgroupfs) or `_` (systemd, where `-` separates slice levels).
fn pod_uid(text: &str) -> Option<String> {
    let uid: String = text.chars().map(|c| if c == '_' { '-' } else { c }).collect();
    let groups: Vec<&str> = uid.split('-').collect();
    let shape = groups.len() == 5
        && groups.iter().zip([8, 4, 4, 4, 12]).all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()));
    shape.then(|| uid.to_ascii_lowercase())
}

/// The scope names container runtimes give their containers' cgroups under the systemd
/// driver, most specific first.
const SCOPES: [(&str, Runtime, bool); 6] = [
    ("docker-", Runtime::Docker, false),
    ("cri-containerd-", Runtime::Containerd, false),
    ("crio-conmon-", Runtime::CriO, true),
    ("crio-", Runtime::CriO, false),
    ("libpod-conmon-", Runtime::Podman, true),
    ("libpod-", Runtime::Podman, false),
];

/// The uid in `user-UID.slice` or `user@UID.service`.
fn user_of(component: &str) -> Option<u32> {
    let digits = component
        .strip_prefix("user-")
        .and_then(|r| r.strip_suffix(".slice"))
        .or_else(|| component.strip_prefix("user@").and_then(|r| r.strip_suffix(".service")))?;
    if digits.is_empty() || digits.len() > 10 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// What the cgroup v2 path `path` (as in /proc/PID/cgroup, starting at the hierarchy's
/// root) says.
pub fn identity(path: &str) -> Identity {
    let mut id = Identity::default();
    let mut previous = "";
    let mut under_kubepods = false;
    for component in path.split('/').filter(|c| !c.is_empty()) {
        if let Some(uid) = user_of(component) {
            id.user = Some(uid);
        }
        if let Some(scope) = component.strip_suffix(".scope") {
            id.unit = Some(component.to_string());
            for (prefix, runtime, monitor) in SCOPES {
                if let Some(cid) = scope.strip_prefix(prefix).and_then(container_id) {
                    id.container = Some(Container { runtime, id: cid, monitor });
                    break;
                }
            }
        } else if component.ends_with(".service") {
            id.unit = Some(component.to_string());
        } else if let Some(slice) = component.strip_suffix(".slice") {
            // kubepods-pod<uid>.slice, kubepods-burstable-pod<uid>.slice,
            // kubepods-besteffort-pod<uid>.slice.
            if slice.starts_with("kubepods") {
                under_kubepods = true;
                if let Some(uid) = slice.rsplit_once("-pod").and_then(|(_, uid)| pod_uid(uid)) {
                    id.pod = Some(uid);
                }
            }
        } else if component == "kubepods" {
            under_kubepods = true;
        } else if let (true, Some(uid)) = (under_kubepods, component.strip_prefix("pod").and_then(pod_uid)) {
            id.pod = Some(uid);
        } else if let Some(cid) = container_id(component) {
            if previous == "docker" {
                id.container = Some(Container { runtime: Runtime::Docker, id: cid, monitor: false });
            } else if id.pod.is_some() && previous.starts_with("pod") {
                id.container = Some(Container { runtime: Runtime::Kubernetes, id: cid, monitor: false });
            }
        }
        previous = component;
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1c0e9a2b3d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6";
    const UID: &str = "0b7c5c2e-8f4a-4f1e-9d3a-6a1b2c3d4e5f";

    fn container(runtime: Runtime, monitor: bool) -> Option<Container> {
        Some(Container { runtime, id: ID.into(), monitor })
    }

    #[test]
    fn systemd_services_sessions_and_user_units() {
        let nginx = identity("/system.slice/nginx.service");
        assert_eq!(nginx, Identity { unit: Some("nginx.service".into()), ..Identity::default() });
        assert_eq!(nginx.label().as_deref(), Some("nginx.service"));
        let session = identity("/user.slice/user-1000.slice/session-3.scope");
        assert_eq!(session.unit.as_deref(), Some("session-3.scope"));
        assert_eq!(session.user, Some(1000));
        let user_unit = identity("/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox-1234.scope");
        assert_eq!(user_unit.unit.as_deref(), Some("app-firefox-1234.scope"));
        assert_eq!(user_unit.user, Some(1000));
        let manager = identity("/user.slice/user-42.slice/user@42.service/init.scope");
        assert_eq!((manager.unit.as_deref(), manager.user), (Some("init.scope"), Some(42)));
        let user_service = identity("/user.slice/user-1000.slice/user@1000.service/app.slice/pipewire.service");
        assert_eq!(user_service.unit.as_deref(), Some("pipewire.service"));
        assert_eq!(identity("/init.scope").unit.as_deref(), Some("init.scope"));
        assert_eq!(identity("/"), Identity::default());
        assert_eq!(identity("/").label(), None);
        assert_eq!(identity("/system.slice").unit, None);
    }

    #[test]
    fn container_scopes_of_each_runtime() {
        for (scope, runtime, monitor) in [
            ("docker", Runtime::Docker, false),
            ("cri-containerd", Runtime::Containerd, false),
            ("crio", Runtime::CriO, false),
            ("crio-conmon", Runtime::CriO, true),
            ("libpod", Runtime::Podman, false),
            ("libpod-conmon", Runtime::Podman, true),
        ] {
            let path = format!("/system.slice/{scope}-{ID}.scope");
            let id = identity(&path);
            assert_eq!(id.container, container(runtime, monitor), "{path}");
            assert_eq!(id.unit, Some(format!("{scope}-{ID}.scope")));
            assert_eq!(id.pod, None);
        }
        // Rootless podman: under the user's manager.
        let rootless = identity(&format!(
            "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"
        ));
        assert_eq!(rootless.container, container(Runtime::Podman, false));
        assert_eq!(rootless.user, Some(1000));
        assert_eq!(
            identity(&format!("/system.slice/docker-{ID}.scope")).label(),
            Some(format!("docker {}", &ID[..12]))
        );
    }

    #[test]
    fn docker_with_the_cgroupfs_driver() {
        assert_eq!(identity(&format!("/docker/{ID}")).container, container(Runtime::Docker, false));
        // Nested: a path ending under the container's cgroup.
        assert_eq!(identity(&format!("/docker/{ID}/init")).container, container(Runtime::Docker, false));
        // A directory named docker holding something else.
        assert_eq!(identity("/docker/buildkit").container, None);
    }

    #[test]
    fn kubernetes_pods_with_either_driver() {
        let systemd_uid = UID.replace('-', "_");
        for class in ["", "burstable-", "besteffort-"] {
            let slice = if class.is_empty() { String::new() } else { format!("/kubepods-{}.slice", &class[..class.len() - 1]) };
            let path = format!("/kubepods.slice{slice}/kubepods-{class}pod{systemd_uid}.slice/cri-containerd-{ID}.scope");
            let id = identity(&path);
            assert_eq!(id.pod.as_deref(), Some(UID), "{path}");
            assert_eq!(id.container, container(Runtime::Containerd, false), "{path}");
            assert_eq!(id.label(), Some(format!("pod 0b7c5c2e containerd {}", &ID[..12])));
        }
        let crio = identity(&format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{systemd_uid}.slice/crio-{ID}.scope"));
        assert_eq!((crio.pod.as_deref(), crio.container), (Some(UID), container(Runtime::CriO, false)));
        // The pod's own slice, no container: the pod alone.
        let pod_only = identity(&format!("/kubepods.slice/kubepods-pod{systemd_uid}.slice"));
        assert_eq!((pod_only.pod.as_deref(), pod_only.container), (Some(UID), None));
        // cgroupfs driver.
        let cgroupfs = identity(&format!("/kubepods/burstable/pod{UID}/{ID}"));
        assert_eq!(cgroupfs.pod.as_deref(), Some(UID));
        assert_eq!(cgroupfs.container, container(Runtime::Kubernetes, false));
        let guaranteed = identity(&format!("/kubepods/pod{UID}/{ID}"));
        assert_eq!(guaranteed.pod.as_deref(), Some(UID));
    }

    #[test]
    fn names_that_only_look_alike_are_not_taken() {
        // Not hex, too short, too long, a pod outside kubepods, a bad UID.
        assert_eq!(identity("/system.slice/docker-notacontainer.scope").container, None);
        assert_eq!(identity("/system.slice/docker-abc.scope").container, None);
        assert_eq!(identity(&format!("/system.slice/docker-{ID}00.scope")).container, None);
        assert!(identity(&format!("/system.slice/docker-{ID}.scope")).unit.is_some());
        assert_eq!(identity(&format!("/pod{UID}")).pod, None);
        assert_eq!(identity("/kubepods/podnot-a-uid").pod, None);
        assert_eq!(identity("/kubepods.slice/kubepods-pod1234.slice").pod, None);
        assert_eq!(identity("/user.slice/user-.slice").user, None);
        assert_eq!(identity("/user.slice/user-99999999999.slice").user, None);
        assert_eq!(identity("/user.slice/user-12a.slice").user, None);
        // Uppercase hex is read, and shown lowercase.
        let upper = identity(&format!("/docker/{}", ID.to_ascii_uppercase()));
        assert_eq!(upper.container, container(Runtime::Docker, false));
    }

    #[test]
    fn hostile_paths_are_read_as_text_and_bounded() {
        // Escape sequences stay in the unit's name as they are: every output escapes them.
        let evil = identity("/system.slice/\x1b]0;owned\x07.service");
        assert_eq!(evil.unit.as_deref(), Some("\x1b]0;owned\x07.service"));
        assert_eq!(crate::escape::text(evil.unit.as_deref().unwrap()), "\\x1b]0;owned\\x07.service");
        // Non-UTF-8 bytes arrive replaced (paths are read lossily); nothing matches them.
        let lossy = String::from_utf8_lossy(b"/system.slice/docker-\xff\xfe.scope").into_owned();
        assert_eq!(identity(&lossy).container, None);
        // Very long and very deep paths are read in one pass.
        let deep = "/a".repeat(100_000) + &format!("/docker-{ID}.scope");
        assert_eq!(identity(&deep).container, container(Runtime::Docker, false));
        let long_name = format!("/{}.service", "x".repeat(1 << 20));
        assert_eq!(identity(&long_name).unit.map(|u| u.len()), Some((1 << 20) + 8));
        assert_eq!(identity("//.scope//.service/").unit.as_deref(), Some(".service"));
        assert_eq!(identity(""), Identity::default());
    }
}
