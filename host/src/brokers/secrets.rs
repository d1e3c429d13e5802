//! Credentials: read from the environment or a secrets file, held in a type
//! that never prints itself, and scrubbed from every text the process emits.
//!
//! Where a credential comes from, for account `kite-main` (its `credentials`
//! name, by default the id upper-cased with `-` as `_`: `KITE_MAIN`):
//! - the environment: `TRADEHOST_KITE_MAIN_API_KEY`, `TRADEHOST_KITE_MAIN_ACCESS_TOKEN`;
//! - else the secrets file (`TRADEHOST_SECRETS`, default `secrets.toml` beside
//!   the configuration): `[accounts.kite-main] api_key = "…", access_token = "…"`.
//!
//! The Telegram bot token: `TRADEHOST_TELEGRAM_BOT_TOKEN`, or `[telegram] bot_token`.

use std::path::{Path, PathBuf};

pub use crate::domain::secret::{Secret, scrub};

/// Say so when the secrets file can be read by other users (like ssh does with keys).
fn warn_if_shared(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            eprintln!(
                "tradehost: warning: {} is readable by other users (mode {:o}); `chmod 600` it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// One account's credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// API key (Kite: the app's key; OpenAlgo: the key that is the whole login).
    #[serde(default)]
    pub api_key: Option<Secret>,
    /// Access token (Kite, Upstox): valid for a day.
    #[serde(default)]
    pub access_token: Option<Secret>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    #[serde(default)]
    accounts: std::collections::HashMap<String, Credentials>,
    #[serde(default)]
    telegram: Option<TelegramSecrets>,
    #[serde(default)]
    console: Option<ConsoleSecrets>,
}

/// `[console.users.<name>]`: who may log in to the web console.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleSecrets {
    #[serde(default)]
    users: std::collections::BTreeMap<String, ConsoleUser>,
}

/// A console user: an argon2 hash of the password (`tradehost console --hash-password`), and a role.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleUser {
    /// The password's argon2 hash, in PHC form (`$argon2id$…`).
    pub password_hash: Secret,
    /// `viewer` (watch) or `trader` (also place, flatten, reload).
    pub role: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TelegramSecrets {
    bot_token: Secret,
}

/// Credentials of every account, and the Telegram bot token.
#[derive(Debug, Default)]
pub struct SecretStore {
    file: SecretsFile,
    /// Where the file was read from, if there was one.
    pub path: Option<PathBuf>,
}

/// The environment-variable stem of an account's credentials name: `kite-main` → `KITE_MAIN`.
#[must_use]
pub fn env_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn env_secret(var: &str) -> Option<Secret> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .map(|v| Secret::new(v.trim()))
}

impl SecretStore {
    /// The secrets of `config`: `TRADEHOST_SECRETS`, else `secrets.toml` beside it.
    ///
    /// # Errors
    /// A file that exists but does not parse.
    pub fn beside(config: &crate::config::Config) -> anyhow::Result<Self> {
        Self::load(config.path.parent().unwrap_or_else(|| Path::new(".")))
    }

    /// Read the secrets file (`TRADEHOST_SECRETS`, else `secrets.toml` in
    /// `config_dir`) if there is one. The error names the file and line, never a value.
    ///
    /// # Errors
    /// A file that exists but does not parse.
    pub fn load(config_dir: &Path) -> anyhow::Result<Self> {
        let path = std::env::var_os("TRADEHOST_SECRETS")
            .map(PathBuf::from)
            .unwrap_or_else(|| config_dir.join("secrets.toml"));
        if !path.exists() {
            return Ok(Self::default());
        }
        warn_if_shared(&path);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
        let file: SecretsFile = toml::from_str(&text).map_err(|e| {
            let line = e.span().map_or(0, |s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            // The parser's message may quote the offending value: say where, not what.
            anyhow::anyhow!("{}:{line}: the secrets file does not parse (expected [accounts.<id>] api_key/access_token, [telegram] bot_token and [console.users.<name>] password_hash/role)", path.display())
        })?;
        Ok(Self {
            file,
            path: Some(path),
        })
    }

    /// The credentials of account `id` whose credentials name is `name`:
    /// each field from the environment if set there, else from the file.
    #[must_use]
    pub fn credentials(&self, id: &str, name: &str) -> Credentials {
        let stem = env_stem(name);
        let file = self
            .file
            .accounts
            .get(id)
            .or_else(|| self.file.accounts.get(name))
            .cloned()
            .unwrap_or_default();
        Credentials {
            api_key: env_secret(&format!("TRADEHOST_{stem}_API_KEY")).or(file.api_key),
            access_token: env_secret(&format!("TRADEHOST_{stem}_ACCESS_TOKEN"))
                .or(file.access_token),
        }
    }

    /// The web console's users, by name.
    #[must_use]
    pub fn console_users(&self) -> std::collections::BTreeMap<String, ConsoleUser> {
        self.file
            .console
            .as_ref()
            .map(|c| c.users.clone())
            .unwrap_or_default()
    }

    /// The Telegram bot token.
    #[must_use]
    pub fn telegram_token(&self) -> Option<Secret> {
        env_secret("TRADEHOST_TELEGRAM_BOT_TOKEN")
            .or_else(|| self.file.telegram.as_ref().map(|t| t.bot_token.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_and_is_scrubbed_from_text() {
        let s = Secret::new("tok-live-9f8e7d6c");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(
            format!(
                "{:?}",
                Credentials {
                    api_key: None,
                    access_token: Some(s.clone())
                }
            ),
            "Credentials { api_key: None, access_token: Some(Secret(***)) }"
        );
        assert_eq!(
            scrub("Incorrect `api_key` or `access_token` tok-live-9f8e7d6c."),
            "Incorrect `api_key` or `access_token` ***."
        );
        assert_eq!(s.expose(), "tok-live-9f8e7d6c");
    }

    #[test]
    fn a_bad_secrets_file_names_the_line_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("secrets.toml"),
            "[accounts.a]\napi_key = \"abcdef123456\"\naccess_tokn = \"zzzsecretzzz\"\n",
        )
        .unwrap();
        let err = SecretStore::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("secrets.toml:3"), "{err}");
        assert!(
            !err.contains("zzzsecretzzz") && !err.contains("abcdef123456"),
            "{err}"
        );
    }

    #[test]
    fn the_environment_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secrets.toml"), "[accounts.env-test-acct]\napi_key = \"file-key-1234\"\naccess_token = \"file-token-1234\"\n").unwrap();
        let store = SecretStore::load(dir.path()).unwrap();
        // SAFETY of the test: the variable is unique to this test.
        unsafe_env_set("TRADEHOST_ENV_TEST_ACCT_ACCESS_TOKEN", "env-token-5678");
        let c = store.credentials("env-test-acct", "env-test-acct");
        assert_eq!(c.api_key.unwrap().expose(), "file-key-1234");
        assert_eq!(c.access_token.unwrap().expose(), "env-token-5678");
    }

    #[allow(unsafe_code)]
    fn unsafe_env_set(k: &str, v: &str) {
        // Edition 2024 makes set_var unsafe: no other thread reads this variable.
        unsafe { std::env::set_var(k, v) }
    }
}
