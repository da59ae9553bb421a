//! Installs the browser dependencies the binary serves (GraphiQL and React, pinned by
//! `web/package-lock.json`) from the npm registry when they are missing, and points the
//! compiler at them. Nothing third-party is committed, and nothing is fetched at run time.

use std::path::Path;
use std::process::Command;

const ASSETS: [&str; 4] = [
    "node_modules/graphiql/graphiql.min.js",
    "node_modules/graphiql/graphiql.min.css",
    "node_modules/react/umd/react.production.min.js",
    "node_modules/react-dom/umd/react-dom.production.min.js",
];

fn main() {
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    for asset in ASSETS {
        println!("cargo:rerun-if-changed=web/{asset}");
    }
    if ASSETS.iter().any(|asset| !web.join(asset).is_file()) {
        let status = Command::new("npm")
            .args([
                "ci",
                "--no-audit",
                "--no-fund",
                "--ignore-scripts",
                "--loglevel=error",
            ])
            .current_dir(&web)
            .status();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("`npm ci` in api/web failed ({s}); the GraphQL playground's assets come from the npm registry"),
            Err(e) => panic!("cannot run npm ({e}); install Node.js and npm to build the playground's assets"),
        }
    }
    for asset in ASSETS {
        assert!(
            web.join(asset).is_file(),
            "api/web/{asset} is missing after npm ci"
        );
    }
}
