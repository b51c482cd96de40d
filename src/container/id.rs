//! Container IDs are checked before any path is built from them.

use super::ContainerError;

/// `[A-Za-z0-9_+.-]+`, and not "." or "..".
pub fn validate(id: &str) -> Result<(), ContainerError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ContainerError::InvalidId { id: id.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_runc_ids_and_refuses_paths() {
        for good in ["a", "my-container_1.2+x", "ABC"] {
            assert!(validate(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\0"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }
}
