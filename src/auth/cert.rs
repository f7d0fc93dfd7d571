//! The user a client certificate names: the Common Name of its subject.
//!
//! With auth on and client certificates verified by TLS, a request that
//! carries no token acts as the user whose name is the leaf certificate's
//! subject CN, as etcd does. TLS has already checked the chain and the
//! signature by the time the bytes reach here; this reads the name only.
//!
//! The reader walks a fixed path through the DER, never a general tree:
//!
//! ```text
//! Certificate    SEQUENCE { tbsCertificate, signatureAlgorithm, signature }
//! tbsCertificate SEQUENCE { [0] version OPTIONAL, serialNumber, signature,
//!                           issuer, validity, subject, ... }
//! subject        SEQUENCE OF SET OF SEQUENCE { type OID, value string }
//! ```
//!
//! so its depth is five by construction. Every length is checked against
//! the bytes that remain before anything is sliced, input past
//! `CERTIFICATE_BYTES_MAX` is refused unread, and the subject may hold at
//! most `NAME_ATTRIBUTES_MAX` attributes. A subject with no CN, or with
//! more than one, names nobody: picking one of two would let whoever
//! wrote the certificate choose which.

use super::USER_NAME_BYTES_MAX;

/// The largest certificate read. A leaf with a long list of alternative
/// names stays well under this; rustls holds the whole chain in memory
/// before it gets here, so this only bounds the walk.
pub const CERTIFICATE_BYTES_MAX: usize = 64 * 1024;
/// Attributes a subject may hold (each RDN's members counted). Real
/// subjects have a handful.
pub const NAME_ATTRIBUTES_MAX: usize = 64;
/// Bytes of a DER length field after its first byte: four cover any
/// length below `CERTIFICATE_BYTES_MAX`.
const LENGTH_BYTES_MAX: usize = 4;

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
/// `[0] EXPLICIT`: the version field of a v2 or v3 certificate.
const TAG_VERSION: u8 = 0xa0;
/// id-at-commonName, 2.5.4.3.
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_NUMERIC_STRING: u8 = 0x12;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_IA5_STRING: u8 = 0x16;
const TAG_BMP_STRING: u8 = 0x1e;

/// Why no user could be read from a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertError {
    /// Longer than `CERTIFICATE_BYTES_MAX`.
    TooLarge,
    /// The bytes end inside an element.
    Truncated,
    /// A tag other than the structure calls for.
    UnexpectedTag { expected: u8, found: u8 },
    /// A length form DER does not allow (indefinite, non-minimal, or
    /// wider than `LENGTH_BYTES_MAX`).
    BadLength,
    /// More than `NAME_ATTRIBUTES_MAX` attributes in the subject.
    TooManyAttributes,
    /// The subject has no Common Name.
    NoCommonName,
    /// The subject has more than one Common Name.
    SeveralCommonNames,
    /// The name is in a string type not read here, or not valid text in
    /// its own.
    BadString,
    /// Empty, or longer than a user name may be.
    BadNameLength,
}

/// One element: its tag and its content.
struct Element<'a> {
    tag: u8,
    content: &'a [u8],
}

/// A cursor over the elements of a constructed value, front to back.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next element, whatever its tag.
    fn next(&mut self) -> Result<Element<'a>, CertError> {
        let (&tag, after_tag) = self.rest.split_first().ok_or(CertError::Truncated)?;
        if tag & 0x1f == 0x1f {
            // High tag numbers never occur on the path read here.
            return Err(CertError::UnexpectedTag { expected: TAG_SEQUENCE, found: tag });
        }
        let (length_bytes, after_length) = read_length(after_tag)?;
        if length_bytes > after_length.len() {
            return Err(CertError::Truncated);
        }
        let (content, rest) = after_length.split_at(length_bytes);
        self.rest = rest;
        Ok(Element { tag, content })
    }

    /// The next element, which must have tag `expected`.
    fn expect(&mut self, expected: u8) -> Result<&'a [u8], CertError> {
        let element = self.next()?;
        if element.tag != expected {
            return Err(CertError::UnexpectedTag { expected, found: element.tag });
        }
        Ok(element.content)
    }
}

/// A DER length and the bytes after it.
fn read_length(bytes: &[u8]) -> Result<(usize, &[u8]), CertError> {
    let (&first, rest) = bytes.split_first().ok_or(CertError::Truncated)?;
    if first < 0x80 {
        return Ok((usize::from(first), rest));
    }
    let count = usize::from(first & 0x7f);
    if count == 0 || count > LENGTH_BYTES_MAX {
        return Err(CertError::BadLength);
    }
    if count > rest.len() {
        return Err(CertError::Truncated);
    }
    let (digits, rest) = rest.split_at(count);
    if digits[0] == 0 {
        return Err(CertError::BadLength);
    }
    let length = digits.iter().fold(0usize, |n, &d| (n << 8) | usize::from(d));
    if length < 0x80 {
        // DER uses the short form whenever it can.
        return Err(CertError::BadLength);
    }
    Ok((length, rest))
}

/// The subject's Common Name of the DER certificate `der`, as a user name.
pub fn common_name(der: &[u8]) -> Result<String, CertError> {
    if der.len() > CERTIFICATE_BYTES_MAX {
        return Err(CertError::TooLarge);
    }
    let certificate = Reader::new(der).expect(TAG_SEQUENCE)?;
    let mut tbs = Reader::new(Reader::new(certificate).expect(TAG_SEQUENCE)?);
    if tbs.peek_tag() == Some(TAG_VERSION) {
        tbs.next()?;
    }
    // serialNumber, signature, issuer, validity: skipped whole.
    for _ in 0..4 {
        tbs.next()?;
    }
    let subject = tbs.expect(TAG_SEQUENCE)?;
    subject_common_name(subject)
}

/// The one CN among the attributes of a subject's content.
fn subject_common_name(subject: &[u8]) -> Result<String, CertError> {
    let mut rdns = Reader::new(subject);
    let mut found: Option<Element<'_>> = None;
    let mut attributes = 0usize;
    while !rdns.is_empty() {
        let mut rdn = Reader::new(rdns.expect(TAG_SET)?);
        while !rdn.is_empty() {
            attributes += 1;
            if attributes > NAME_ATTRIBUTES_MAX {
                return Err(CertError::TooManyAttributes);
            }
            let mut attribute = Reader::new(rdn.expect(TAG_SEQUENCE)?);
            let oid = attribute.expect(TAG_OID)?;
            let value = attribute.next()?;
            if oid != OID_COMMON_NAME {
                continue;
            }
            if found.is_some() {
                return Err(CertError::SeveralCommonNames);
            }
            found = Some(value);
        }
    }
    let value = found.ok_or(CertError::NoCommonName)?;
    let name = decode_string(&value)?;
    if name.is_empty() || name.len() > USER_NAME_BYTES_MAX {
        return Err(CertError::BadNameLength);
    }
    Ok(name)
}

/// The text of a directory string, in the types certificates use for names.
fn decode_string(value: &Element<'_>) -> Result<String, CertError> {
    match value.tag {
        TAG_UTF8_STRING => {
            std::str::from_utf8(value.content).map(str::to_string).map_err(|_| CertError::BadString)
        }
        TAG_PRINTABLE_STRING | TAG_IA5_STRING | TAG_NUMERIC_STRING => {
            match value.content.iter().all(|b| b.is_ascii() && !b.is_ascii_control()) {
                true => Ok(value.content.iter().map(|&b| char::from(b)).collect()),
                false => Err(CertError::BadString),
            }
        }
        TAG_BMP_STRING => {
            if !value.content.len().is_multiple_of(2) {
                return Err(CertError::BadString);
            }
            let units = value.content.chunks_exact(2).map(|p| u16::from_be_bytes([p[0], p[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .map_err(|_| CertError::BadString)
        }
        _ => Err(CertError::BadString),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate made with `openssl req -x509` for subject
    /// `/O=shop floor/CN=alice/OU=boards`.
    const ALICE_DER: &[u8] = include_bytes!("testdata/alice.der");

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    fn attribute(oid: &[u8], tag: u8, value: &[u8]) -> Vec<u8> {
        tlv(TAG_SET, &tlv(TAG_SEQUENCE, &[tlv(TAG_OID, oid), tlv(tag, value)].concat()))
    }

    /// A certificate with `subject` (its content) and dummy fields
    /// elsewhere: only the structure matters to the reader.
    fn certificate(subject: &[u8], with_version: bool) -> Vec<u8> {
        let mut tbs = Vec::new();
        if with_version {
            tbs.extend(tlv(TAG_VERSION, &tlv(0x02, &[2])));
        }
        tbs.extend(tlv(0x02, &[1, 2, 3]));
        tbs.extend(tlv(TAG_SEQUENCE, &tlv(TAG_OID, &[0x2a, 0x86])));
        tbs.extend(tlv(TAG_SEQUENCE, &attribute(OID_COMMON_NAME, TAG_UTF8_STRING, b"issuer")));
        tbs.extend(tlv(TAG_SEQUENCE, &[tlv(0x17, b"260101"), tlv(0x17, b"270101")].concat()));
        tbs.extend(tlv(TAG_SEQUENCE, subject));
        tbs.extend(tlv(TAG_SEQUENCE, b"key"));
        let body = [tlv(TAG_SEQUENCE, &tbs), tlv(TAG_SEQUENCE, b"alg"), tlv(0x03, b"sig")];
        tlv(TAG_SEQUENCE, &body.concat())
    }

    #[test]
    fn reads_the_subject_cn_of_a_real_certificate() {
        assert_eq!(common_name(ALICE_DER), Ok("alice".to_string()));
    }

    #[test]
    fn reads_each_string_type_with_and_without_version() {
        let organization = attribute(&[0x55, 0x04, 0x0a], TAG_PRINTABLE_STRING, b"org");
        for with_version in [true, false] {
            for (tag, bytes) in [
                (TAG_UTF8_STRING, "bé".as_bytes().to_vec()),
                (TAG_PRINTABLE_STRING, b"bob".to_vec()),
                (TAG_IA5_STRING, b"bob".to_vec()),
                (TAG_BMP_STRING, vec![0, b'b', 0, 0xe9]),
            ] {
                let subject = [organization.clone(), attribute(OID_COMMON_NAME, tag, &bytes)];
                let name = common_name(&certificate(&subject.concat(), with_version)).unwrap();
                assert!(name == "bé" || name == "bob", "{name}");
            }
        }
    }

    #[test]
    fn a_subject_without_exactly_one_cn_names_nobody() {
        let org = attribute(&[0x55, 0x04, 0x0a], TAG_UTF8_STRING, b"org");
        assert_eq!(common_name(&certificate(&org, true)), Err(CertError::NoCommonName));
        let cn = |v: &[u8]| attribute(OID_COMMON_NAME, TAG_UTF8_STRING, v);
        let two = [cn(b"alice"), cn(b"root")].concat();
        assert_eq!(common_name(&certificate(&two, true)), Err(CertError::SeveralCommonNames));
        assert_eq!(common_name(&certificate(&cn(b""), true)), Err(CertError::BadNameLength));
        let long = vec![b'a'; USER_NAME_BYTES_MAX + 1];
        assert_eq!(common_name(&certificate(&cn(&long), true)), Err(CertError::BadNameLength));
        let bad_utf8 = cn(&[0xff, 0xfe]);
        assert_eq!(common_name(&certificate(&bad_utf8, true)), Err(CertError::BadString));
        let control = attribute(OID_COMMON_NAME, TAG_PRINTABLE_STRING, b"a\nb");
        assert_eq!(common_name(&certificate(&control, true)), Err(CertError::BadString));
        let teletex = attribute(OID_COMMON_NAME, 0x14, b"alice");
        assert_eq!(common_name(&certificate(&teletex, true)), Err(CertError::BadString));
    }

    #[test]
    fn too_many_attributes_are_refused() {
        let org = attribute(&[0x55, 0x04, 0x0a], TAG_UTF8_STRING, b"o");
        let subject = org.repeat(NAME_ATTRIBUTES_MAX + 1);
        let der = certificate(&subject, true);
        assert_eq!(common_name(&der), Err(CertError::TooManyAttributes));
    }

    #[test]
    fn oversized_input_is_refused_unread() {
        let der = vec![TAG_SEQUENCE; CERTIFICATE_BYTES_MAX + 1];
        assert_eq!(common_name(&der), Err(CertError::TooLarge));
    }

    #[test]
    fn lengths_must_be_der() {
        // Indefinite, non-minimal long form, leading zero, too wide.
        for length in [&[0x80][..], &[0x81, 0x05], &[0x82, 0x00, 0x90], &[0x85, 1, 1, 1, 1, 1]] {
            let der = [&[TAG_SEQUENCE][..], length, &[0u8; 8]].concat();
            assert_eq!(common_name(&der), Err(CertError::BadLength), "{length:?}");
        }
        // A length past the end of the input.
        let der = [TAG_SEQUENCE, 0x84, 0x7f, 0xff, 0xff, 0xff];
        assert_eq!(common_name(&der), Err(CertError::Truncated));
    }

    #[test]
    fn every_truncation_of_a_real_certificate_is_a_typed_error() {
        for end in 0..ALICE_DER.len() {
            assert!(common_name(&ALICE_DER[..end]).is_err(), "prefix of {end} bytes");
        }
    }

    #[test]
    fn garbage_never_panics() {
        // Every single-byte change of a real certificate, then random
        // bytes from a fixed seed: each gives a name or a typed error.
        let mut der = ALICE_DER.to_vec();
        for at in 0..der.len() {
            for flip in [0x01, 0x80, 0xff] {
                der[at] ^= flip;
                let _ = common_name(&der);
                der[at] ^= flip;
            }
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let len = (seed % 300) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = common_name(&[&[TAG_SEQUENCE, 0x81, 0xff][..], &bytes].concat());
            let _ = common_name(&bytes);
        }
    }
}
