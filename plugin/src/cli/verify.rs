//! `airlift verify`: what kubelet (CRI) and a peer such as Spegel see of airlift's images.

use super::args::VerifyArgs;
use crate::archive::understand::attached::SUBJECT_LABEL;
use crate::containerd::{Grpc, ImageRecord, Images};
use crate::verify::gate::VERIFIED_LABEL;
use std::process::ExitCode;
use std::time::Duration;

/// CRI learns of new images through containerd's events: how long a missing image is waited for.
const CRI_GRACE: Duration = Duration::from_secs(3);

/// Runs `airlift verify`.
pub async fn run(args: VerifyArgs) -> ExitCode {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("airlift verify: {e}");
        ExitCode::FAILURE
    };
    let serve = match crate::platform::PlatformPolicy::parse_served(&args.serve_platform) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("airlift verify: --serve-platform: {e}");
            return ExitCode::from(2);
        }
    };
    let grpc = match Grpc::connect(
        &args.containerd.address,
        &args.containerd.namespace,
        Duration::from_secs(10),
    )
    .await
    {
        Ok(g) => g,
        Err(e) => return fail(&e),
    };
    let images: Vec<ImageRecord> = if args.images.is_empty() {
        match grpc.list_images(Vec::new()).await {
            Ok(all) => all
                .into_iter()
                .filter(|i| i.labels.contains_key(crate::labels::ARCHIVE))
                .collect(),
            Err(e) => return fail(&e),
        }
    } else {
        let mut found = Vec::new();
        for name in &args.images {
            let name = crate::reference::Reference::parse_normalized(name)
                .map(|r| r.to_string())
                .unwrap_or_else(|_| name.clone());
            match grpc.get_image(&name).await {
                Ok(Some(i)) => found.push(i),
                Ok(None) => found.push(ImageRecord {
                    name,
                    media_type: String::new(),
                    digest: String::new(),
                    size: 0,
                    labels: Default::default(),
                }),
                Err(e) => return fail(&e),
            }
        }
        found
    };
    let cri = args.containerd.namespace == "k8s.io";
    let mut findings = Vec::new();
    let mut served = Vec::new();
    for image in &images {
        let mut problems = Vec::new();
        if image.digest.is_empty() {
            problems.push(format!("containerd has no image {}", image.name));
        } else {
            let walked = crate::visibility::walk_serving(&grpc, image, &serve).await;
            problems.extend(walked.problems.iter().cloned());
            // A signature's record (`sha256-<hex>.sig`, a referrers index) is for registries and
            // peers, not for kubelet: its content is checked, not CRI's view of it. Nor is an
            // index of other platforms alone (held to serve them): CRI lists an index only with
            // a manifest of this node's platform. A single manifest of another platform CRI
            // does list (it checks no platform there), so its pin is checked as any other's.
            let attachment = image.labels.contains_key(SUBJECT_LABEL);
            let index = crate::oci::is_index(&image.media_type);
            if !walked.runs_here() {
                let list: Vec<String> = walked.platforms.iter().map(|p| p.to_string()).collect();
                served.push((image.name.clone(), list.join(", "), index));
            }
            if cri && !attachment && (walked.runs_here() || !index) {
                problems.extend(cri_problems(&grpc, image).await);
            }
        }
        findings.push((image.name.clone(), problems, verified(image)));
    }
    let bad = findings.iter().filter(|(_, p, _)| !p.is_empty()).count();
    if args.json {
        let out: Vec<_> = findings
            .iter()
            .map(|(name, problems, verified)| {
                let served_only = served.iter().any(|(n, _, _)| n == name);
                serde_json::json!({"image": name, "problems": problems, "verified": verified, "served_only": served_only})
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&out).expect("findings serialise")
        );
    } else {
        for (name, problems, verified) in &findings {
            if problems.is_empty() {
                println!("ok       {name}");
            }
            if let Some(v) = verified {
                println!("verified {name}: {v}");
            }
            for p in problems {
                println!("MISSING  {name}: {p}");
            }
        }
        for (name, platforms, index) in &served {
            let cri = if *index {
                "CRI does not list it"
            } else {
                "CRI lists it all the same"
            };
            println!("served   {name}: {platforms} only, not this node's ({cri})");
        }
        println!(
            "{} image(s) checked{}, {bad} with something missing",
            findings.len(),
            if cri {
                " (CRI and content)"
            } else {
                " (content; CRI serves k8s.io only)"
            }
        );
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What verification at import found `image` to meet, when it was verified.
fn verified(image: &ImageRecord) -> Option<String> {
    image.labels.get(VERIFIED_LABEL).cloned()
}

/// What CRI's view of `image` lacks: the image itself, its pin, a repo digest naming its
/// target (when it has one).
async fn cri_problems(grpc: &Grpc, image: &ImageRecord) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + CRI_GRACE;
    let seen = loop {
        match grpc.cri_image(&image.name).await {
            Ok(Some(i)) => break i,
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Ok(None) => return vec!["CRI does not see it (kubelet would pull it)".into()],
            Err(e) => return vec![format!("CRI: {e}")],
        }
    };
    let mut problems = Vec::new();
    if !seen.pinned {
        problems.push("CRI does not report it pinned (kubelet's image GC may delete it)".into());
    }
    // A repo digest exists only where a `name@digest` record does (CRI's pulls make one; an
    // import with `--digest-refs` / `digest_refs` does): where there is one, it names the target.
    if !seen.repo_digests.is_empty()
        && !seen.repo_digests.iter().any(|d| d.ends_with(&image.digest))
    {
        problems.push(format!(
            "CRI's repo digests {:?} do not name the target {}",
            seen.repo_digests, image.digest
        ));
    }
    problems
}
