//! Password policy and Argon2id hashing (PHC string form).

use argon2::password_hash::{
    rand_core::OsRng, Output, ParamsString, PasswordHash, PasswordHasher, SaltString,
};
use argon2::{Algorithm, Argon2, Params, PasswordVerifier, Version};
use tokio::sync::oneshot;

/// Shortest accepted password (NIST SP 800-63B minimum).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password: bounds the hashing work one request can demand.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// OWASP's minimum Argon2id cost: 19 MiB of memory, 2 passes, 1 lane.
pub const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
pub const ARGON2_ITERATIONS: u32 = 2;
pub const ARGON2_LANES: u32 = 1;

fn hasher() -> Argon2<'static> {
    let params = Params::new(ARGON2_MEMORY_KIB, ARGON2_ITERATIONS, ARGON2_LANES, None)
        .expect("constant Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Least zxcvbn score a password must reach: 2 means "somewhat guessable" (more than a million
/// guesses), which rules out the breach lists' common passwords and their simple variations.
pub const MIN_ZXCVBN_SCORE: zxcvbn::Score = zxcvbn::Score::Two;
/// Names shorter than this are not looked for inside passwords (too many false matches).
const MIN_NAME_CHARS: usize = 3;

/// What a password must not contain: the account's own phone number and names.
#[derive(Debug, Default, Clone, Copy)]
pub struct PersonalData<'a> {
    /// E.164 (`+639171234567`).
    pub phone: Option<&'a str>,
    pub names: &'a [&'a str],
}

/// Why a password is refused, phrased to follow the field name.
///
/// Length (8 to 128 characters), then the account's own data (its phone number in any format,
/// its names), then guessability by zxcvbn, whose dictionaries hold the most common passwords.
pub fn check_password_policy(password: &str, personal: PersonalData<'_>) -> Result<(), String> {
    check_password_length(password)?;
    if personal
        .phone
        .is_some_and(|phone| contains_phone(password, phone))
    {
        return Err("must not contain your phone number".to_owned());
    }
    let folded = fold(password);
    for name in personal.names {
        let name = fold(name);
        if name.chars().count() >= MIN_NAME_CHARS && folded.contains(&name) {
            return Err("must not contain your name".to_owned());
        }
    }
    let mut inputs: Vec<&str> = personal.names.to_vec();
    inputs.extend(personal.phone);
    let estimate = zxcvbn::zxcvbn(password, &inputs);
    if estimate.score() < MIN_ZXCVBN_SCORE {
        let why = estimate
            .feedback()
            .and_then(|f| f.warning())
            .map(|w| format!(" ({})", w.to_string().trim_end_matches('.').to_lowercase()))
            .unwrap_or_default();
        return Err(format!("is too easy to guess{why}"));
    }
    Ok(())
}

/// The cheap part of the policy: 8 to 128 characters.
pub fn check_password_length(password: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(format!("must be at least {MIN_PASSWORD_CHARS} characters"));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(format!("must be at most {MAX_PASSWORD_CHARS} characters"));
    }
    Ok(())
}

/// Lowercase letters and digits only, so `Maria-Santos` and `maria santos` compare equal.
fn fold(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// Whether the password's digits, read in order with anything between them dropped, hold the
/// phone's national number (`0917 123 4567`, `+63-917-1234567` and `9171234567` all do).
fn contains_phone(password: &str, e164: &str) -> bool {
    let national = crate::accounts::phone::national_digits(e164);
    if national.len() < 7 {
        return false;
    }
    let digits: String = password.chars().filter(char::is_ascii_digit).collect();
    digits.contains(&national)
}

/// Hashes with a fresh random salt; the result is a PHC string (`$argon2id$v=19$m=19456,...`).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

/// Why the pool did not take a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// Every hashing thread is busy and the queue is full: try again shortly.
    #[error("too many passwords are being checked right now; try again shortly")]
    Busy,
    /// The pool's threads are gone (the server is stopping).
    #[error("password hashing is stopping")]
    Stopped,
}

/// What a new password hashes to, or why the policy refuses it.
pub type Checked = Result<String, String>;

enum Job {
    Hash(String, oneshot::Sender<anyhow::Result<String>>),
    /// The policy (zxcvbn is CPU work too), then the hash.
    CheckAndHash {
        password: String,
        phone: Option<String>,
        names: Vec<String>,
        reply: oneshot::Sender<anyhow::Result<Checked>>,
    },
    Verify(String, String, oneshot::Sender<bool>),
}

/// Argon2id on a fixed set of threads with a short bounded queue.
///
/// Each hash takes [`ARGON2_MEMORY_KIB`] of memory and most of a core for tens of milliseconds,
/// so unbounded hashing turns a burst of registrations into gigabytes of RSS and starves every
/// other request. Here at most `threads` hashes run at once, on threads of their own (the
/// allocator keeps freed Argon2 blocks per thread, so few threads also bound what it keeps),
/// at most `queue` more wait, and anything beyond is refused at once.
pub struct HashPool {
    jobs: std::sync::mpsc::SyncSender<Job>,
    threads: usize,
}

impl HashPool {
    pub fn new(threads: usize, queue: usize) -> Self {
        let threads = threads.max(1);
        let (jobs, receiver) = std::sync::mpsc::sync_channel::<Job>(queue);
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        for n in 0..threads {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("hilot-hash-{n}"))
                .spawn(move || {
                    let mut memory = ArgonMemory::new();
                    loop {
                        let job = match receiver.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(Job::Hash(password, reply)) => {
                                let _ = reply.send(memory.hash(&password));
                            }
                            Ok(Job::Verify(password, phc, reply)) => {
                                let _ = reply.send(memory.verify(&password, &phc));
                            }
                            Ok(Job::CheckAndHash {
                                password,
                                phone,
                                names,
                                reply,
                            }) => {
                                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                                let personal = PersonalData {
                                    phone: phone.as_deref(),
                                    names: &names,
                                };
                                let checked = match check_password_policy(&password, personal) {
                                    Ok(()) => memory.hash(&password).map(Ok),
                                    Err(why) => Ok(Err(why)),
                                };
                                let _ = reply.send(checked);
                            }
                            Err(_) => return, // every sender dropped
                        }
                    }
                })
                .expect("spawning a hashing thread");
        }
        Self { jobs, threads }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    fn submit(&self, job: Job) -> Result<(), PoolError> {
        self.jobs.try_send(job).map_err(|error| match error {
            std::sync::mpsc::TrySendError::Full(_) => {
                metrics::counter!("hilot_password_hashes_refused_total").increment(1);
                PoolError::Busy
            }
            std::sync::mpsc::TrySendError::Disconnected(_) => PoolError::Stopped,
        })
    }

    /// Hashes on the pool; `Busy` when the queue is full.
    pub async fn hash(&self, password: &str) -> Result<anyhow::Result<String>, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Hash(password.to_owned(), reply))?;
        answer.await.map_err(|_| PoolError::Stopped)
    }

    /// Checks a new password against the policy and hashes it, on the pool (both are CPU work
    /// that must not run on the request threads); `Busy` when the queue is full.
    pub async fn check_and_hash(
        &self,
        password: &str,
        personal: PersonalData<'_>,
    ) -> Result<anyhow::Result<Checked>, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::CheckAndHash {
            password: password.to_owned(),
            phone: personal.phone.map(str::to_owned),
            names: personal.names.iter().map(|n| (*n).to_owned()).collect(),
            reply,
        })?;
        answer.await.map_err(|_| PoolError::Stopped)
    }

    /// Verifies on the pool; `Busy` when the queue is full.
    pub async fn verify(&self, password: &str, phc: &str) -> Result<bool, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.submit(Job::Verify(password.to_owned(), phc.to_owned(), reply))?;
        answer.await.map_err(|_| PoolError::Stopped)
    }
}

/// One hashing thread's Argon2 memory, allocated once and reused by every hash it computes, so
/// the memory hashing holds is `threads` × 19 MiB however many passwords go through (a fresh
/// 19 MiB per hash is what the allocator may keep per thread long after).
struct ArgonMemory {
    /// Allocated on the first hash, so an idle server holds none.
    blocks: Vec<argon2::Block>,
}

impl ArgonMemory {
    fn new() -> Self {
        Self { blocks: Vec::new() }
    }

    fn blocks(&mut self) -> &mut [argon2::Block] {
        if self.blocks.is_empty() {
            self.blocks = vec![argon2::Block::default(); ARGON2_MEMORY_KIB as usize];
        }
        &mut self.blocks
    }

    /// The same PHC string as [`hash_password`], computed in this thread's memory.
    fn hash(&mut self, password: &str) -> anyhow::Result<String> {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_buffer = [0u8; 64];
        let salt_bytes = salt
            .decode_b64(&mut salt_buffer)
            .map_err(|e| anyhow::anyhow!("decoding a salt: {e}"))?;
        let argon = hasher();
        let blocks = self.blocks();
        let output = Output::init_with(Params::DEFAULT_OUTPUT_LEN, |out| {
            argon
                .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *blocks)
                .map_err(|_| argon2::password_hash::Error::Crypto)
        })
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))?;
        let params = ParamsString::try_from(argon.params())
            .map_err(|e| anyhow::anyhow!("formatting Argon2 parameters: {e}"))?;
        Ok(PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params,
            salt: Some(salt.as_salt()),
            hash: Some(output),
        }
        .to_string())
    }

    /// [`verify_password`] in this thread's memory (hashes made with more memory than ours,
    /// none so far, take the allocating path).
    fn verify(&mut self, password: &str, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let (Ok(params), Some(salt), Some(expected)) =
            (Params::try_from(&parsed), parsed.salt, parsed.hash)
        else {
            return false;
        };
        if parsed.algorithm != Algorithm::Argon2id.ident()
            || params.block_count() > ARGON2_MEMORY_KIB as usize
        {
            return verify_password(password, phc);
        }
        let version = parsed
            .version
            .and_then(|v| Version::try_from(v).ok())
            .unwrap_or(Version::V0x13);
        let mut salt_buffer = [0u8; 64];
        let Ok(salt_bytes) = salt.decode_b64(&mut salt_buffer) else {
            return false;
        };
        let argon = Argon2::new(Algorithm::Argon2id, version, params);
        let blocks = self.blocks();
        let computed = Output::init_with(expected.len(), |out| {
            argon
                .hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, &mut *blocks)
                .map_err(|_| argon2::password_hash::Error::Crypto)
        });
        // `Output`'s equality is constant-time.
        computed.is_ok_and(|computed| computed == expected)
    }
}

/// Checks a password against a stored PHC string; any malformed hash is simply a mismatch.
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|parsed| {
            hasher()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of a random password, verified against when the phone is unknown so that an unknown
/// phone and a wrong password take the same time.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("dummy-password-for-timing").expect("hashing works"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_phc_at_owasp_cost_and_verify() {
        let phc = hash_password("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password("correct horse battery", &phc));
        assert!(!verify_password("wrong horse battery", &phc));
        assert!(!verify_password("x", "not a phc string"));
    }

    const NONE: PersonalData<'static> = PersonalData {
        phone: None,
        names: &[],
    };

    #[test]
    fn the_pools_reused_memory_hashes_and_verifies_like_the_library() {
        let mut memory = ArgonMemory::new();
        let ours = memory.hash("correct horse battery").unwrap();
        assert!(
            ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{ours}"
        );
        assert!(verify_password("correct horse battery", &ours));
        let theirs = hash_password("correct horse battery").unwrap();
        assert!(memory.verify("correct horse battery", &theirs));
        assert!(!memory.verify("wrong horse battery", &theirs));
        assert!(!memory.verify("x", "not a phc string"));
    }

    #[test]
    fn policy_refuses_short_long_common_and_repetitive() {
        assert!(check_password_policy("short", NONE).is_err());
        assert!(check_password_policy(&"ab1!".repeat(40), NONE).is_err());
        assert!(check_password_policy("Password123", NONE).is_err());
        assert!(check_password_policy("qwertyuiop", NONE).is_err());
        assert!(check_password_policy("aaaaaaaaaa", NONE).is_err());
        assert!(check_password_policy("a sound passphrase", NONE).is_ok());
    }

    #[test]
    fn policy_refuses_the_phone_number_in_any_format_and_the_name() {
        let me = PersonalData {
            phone: Some("+639171234567"),
            names: &["Maria", "Santos"],
        };
        for password in [
            "+639171234567",
            "09171234567",
            "my 0917-123-4567 pw",
            "x9171234567x",
        ] {
            assert_eq!(
                check_password_policy(password, me).unwrap_err(),
                "must not contain your phone number",
                "{password}"
            );
        }
        assert_eq!(
            check_password_policy("Maria!Quiet-River-42", me).unwrap_err(),
            "must not contain your name"
        );
        assert!(check_password_policy("a sound passphrase", me).is_ok());
    }
}
