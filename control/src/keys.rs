//! The server's master key and what it seals: each workspace's backup data key, AES-256-GCM
//! under `control.master_key_file`, bound to its workspace by the associated data.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

use crate::ControlError;

/// The server's master key, which seals each workspace's data key.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

impl MasterKey {
    pub fn from_hex(hex: &str) -> Result<MasterKey, String> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("the master key must be 64 hex digits (32 bytes)".into());
        }
        let mut key = [0u8; 32];
        for (i, k) in key.iter_mut().enumerate() {
            *k = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(MasterKey(key))
    }

    /// Reads the key file, or creates it (32 random bytes, hex, mode 0600) when missing.
    pub fn load_or_create(path: &std::path::Path) -> Result<MasterKey, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => MasterKey::from_hex(&text).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                SystemRandom::new().fill(&mut key).map_err(|_| "no system randomness for the master key".to_owned())?;
                let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
                write_private(path, &hex).map_err(|e| format!("{}: {e}", path.display()))?;
                Ok(MasterKey(key))
            }
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    fn key(&self) -> Result<LessSafeKey, ControlError> {
        UnboundKey::new(&AES_256_GCM, &self.0).map(LessSafeKey::new).map_err(|_| ControlError::Config("the master key is unusable".into()))
    }

    /// `nonce ‖ ciphertext ‖ tag`, hex; `aad` binds the sealed key to its workspace.
    pub fn seal(&self, plain: &[u8], aad: &str) -> Result<String, ControlError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| ControlError::Config("no system randomness".into()))?;
        let mut buf = plain.to_vec();
        self.key()?
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad.as_bytes()), &mut buf)
            .map_err(|_| ControlError::Config("sealing failed".into()))?;
        Ok(nonce.iter().chain(buf.iter()).map(|b| format!("{b:02x}")).collect())
    }

    pub fn open(&self, sealed: &str, aad: &str) -> Result<Vec<u8>, ControlError> {
        let fail = || ControlError::Config("a sealed key cannot be opened with this master key (control.master_key_file changed?)".into());
        let bytes: Vec<u8> = (0..sealed.len() / 2)
            .map(|i| u8::from_str_radix(sealed.get(2 * i..2 * i + 2).unwrap_or("zz"), 16))
            .collect::<Result<_, _>>()
            .map_err(|_| fail())?;
        if bytes.len() < NONCE_LEN + 16 {
            return Err(fail());
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| fail())?;
        let mut buf = rest.to_vec();
        let plain = self.key()?.open_in_place(nonce, Aad::from(aad.as_bytes()), &mut buf).map_err(|_| fail())?;
        Ok(plain.to_vec())
    }
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_keys_open_only_with_the_master_key_and_their_workspace() {
        let master = MasterKey::from_hex(&"ab".repeat(32)).expect("key");
        let sealed = master.seal(b"0123456789abcdef0123456789abcdef", "ws-1").expect("seal");
        assert!(!sealed.contains(&hex(b"0123456789abcdef")), "the key is not in the clear");
        assert_eq!(master.open(&sealed, "ws-1").expect("open"), b"0123456789abcdef0123456789abcdef");
        assert!(master.open(&sealed, "ws-2").is_err(), "bound to its workspace");
        let other = MasterKey::from_hex(&"cd".repeat(32)).expect("key");
        assert!(other.open(&sealed, "ws-1").is_err());
        assert!(master.open("zz", "ws-1").is_err());
        assert!(format!("{master:?}").contains('…'), "never printed");
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
