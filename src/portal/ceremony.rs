//! The WebAuthn ceremonies, by webauthn-rs: a passkey registered with user verification
//! required and a resident (discoverable) key asked for, and a sign-in with the phone a QR
//! already registered.
//!
//! webauthn-rs's passkey registration asks for user verification and verifies it; it asks for
//! no resident key, because security keys with little storage break when forced to keep one.
//! A phone's platform authenticator is what this portal registers, and the seeds' flow signs
//! in with the key alone, so the options sent to the browser ask for a resident key
//! (`residentKey: "required"`). Residency is the authenticator's promise to the browser and
//! cannot be verified by a server (the `credProps` extension reports it); user verification
//! can, and is.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use uuid::Uuid;
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential,
    RegisterPublicKeyCredential, Url, Webauthn, WebauthnBuilder,
};
use webauthn_rs_proto::{ResidentKeyRequirement, UserVerificationPolicy};

use crate::config::Portal as PortalConfig;
use crate::office::state::Device;

/// A ceremony started and waiting for the browser's answer.
#[derive(Clone)]
pub enum Pending {
    Registration(Box<PasskeyRegistration>),
    Authentication(Box<PasskeyAuthentication>),
}

/// A verified registration, as the log records it.
pub struct Made {
    /// base64url.
    pub credential_id: String,
    /// The COSE public key exactly as the authenticator sent it, base64url.
    pub public_key: String,
    pub aaguid: Uuid,
    /// The verifier's stored credential (webauthn-rs `Passkey`, JSON).
    pub passkey: String,
}

pub struct Ceremonies {
    webauthn: Webauthn,
}

impl Ceremonies {
    /// The relying party: `portal.rp_id` (or the base URL's host) and the base URL's origin.
    pub fn new(config: &PortalConfig) -> anyhow::Result<Ceremonies> {
        Ceremonies::for_site("portal", &config.base_url, &config.rp_id, &config.rp_name)
    }

    /// The relying party of a site (`portal`, `console`: the configuration section named in
    /// errors): `rp_id` (or the base URL's host) and the base URL's origin.
    pub fn for_site(
        section: &str,
        base_url: &str,
        rp_id: &str,
        rp_name: &str,
    ) -> anyhow::Result<Ceremonies> {
        let origin = Url::parse(base_url)
            .map_err(|e| anyhow::anyhow!("{section}.base_url {base_url:?}: {e}"))?;
        let host = origin.host_str().unwrap_or_default().to_owned();
        let rp_id = if rp_id.is_empty() {
            host
        } else {
            rp_id.to_owned()
        };
        // On localhost (development, tests) the port the server got may differ from the base
        // URL's; anywhere else the origin must match exactly.
        let localhost = origin.host_str() == Some("localhost");
        let webauthn = WebauthnBuilder::new(&rp_id, &origin)
            .and_then(|b| b.rp_name(rp_name).allow_any_port(localhost).build())
            .map_err(|e| {
                anyhow::anyhow!(
                    "{section}.rp_id {rp_id:?} does not suit {section}.base_url {base_url:?} ({e}); the relying-party id must be a domain (not an IP address) that the base URL's host is or ends with"
                )
            })?;
        Ok(Ceremonies { webauthn })
    }

    /// The options for `navigator.credentials.create`. The user handle is the QR's id: it
    /// says nothing about the person and is unique per registration.
    pub fn start_registration(
        &self,
        qr_id: Uuid,
        subscriber_id: &str,
        display_name: &str,
    ) -> anyhow::Result<(serde_json::Value, Pending)> {
        self.start_registration_for(
            qr_id,
            subscriber_id,
            &format!("{display_name} {subscriber_id}"),
            &[],
        )
    }

    /// The options for `navigator.credentials.create` for any user: `user_id` is the opaque
    /// user handle; `exclude` are credential ids (base64url) the authenticator must not
    /// register again.
    pub fn start_registration_for(
        &self,
        user_id: Uuid,
        name: &str,
        display_name: &str,
        exclude: &[String],
    ) -> anyhow::Result<(serde_json::Value, Pending)> {
        let exclude: Vec<webauthn_rs::prelude::CredentialID> = exclude
            .iter()
            .filter_map(|id| URL_SAFE_NO_PAD.decode(id).ok())
            .map(Into::into)
            .collect();
        let (mut options, state) = self.webauthn.start_passkey_registration(
            user_id,
            name,
            display_name,
            (!exclude.is_empty()).then_some(exclude),
        )?;
        let selection = options
            .public_key
            .authenticator_selection
            .get_or_insert_with(Default::default);
        selection.resident_key = Some(ResidentKeyRequirement::Required);
        selection.require_resident_key = true;
        selection.user_verification = UserVerificationPolicy::Required;
        Ok((
            serde_json::to_value(options)?,
            Pending::Registration(Box::new(state)),
        ))
    }

    /// Verifies the browser's answer to a registration (challenge, origin, relying party,
    /// user verification, signature of the attestation) and reads what the log records.
    pub fn finish_registration(
        &self,
        answer: &serde_json::Value,
        state: &PasskeyRegistration,
    ) -> Result<Made, String> {
        let answer: RegisterPublicKeyCredential = serde_json::from_value(answer.clone())
            .map_err(|e| format!("not a WebAuthn registration: {e}"))?;
        let passkey = self
            .webauthn
            .finish_passkey_registration(&answer, state)
            .map_err(|e| format!("the registration does not verify: {e}"))?;
        let (aaguid, public_key) = attested_key(&answer.response.attestation_object)?;
        Ok(Made {
            credential_id: URL_SAFE_NO_PAD.encode(passkey.cred_id().as_slice()),
            public_key: URL_SAFE_NO_PAD.encode(public_key),
            aaguid,
            passkey: serde_json::to_string(&passkey).map_err(|e| e.to_string())?,
        })
    }

    /// The options for `navigator.credentials.get`, allowing only the phone the QR registered.
    pub fn start_authentication(
        &self,
        device: &Device,
    ) -> anyhow::Result<(serde_json::Value, Pending)> {
        let passkey: Passkey =
            serde_json::from_str(device.passkey.as_deref().ok_or_else(|| {
                anyhow::anyhow!("this phone was recorded without a verifiable credential")
            })?)?;
        self.start_authentication_with(&[passkey])
    }

    /// The options for `navigator.credentials.get`, allowing only `passkeys`.
    pub fn start_authentication_with(
        &self,
        passkeys: &[Passkey],
    ) -> anyhow::Result<(serde_json::Value, Pending)> {
        let (options, state) = self.webauthn.start_passkey_authentication(passkeys)?;
        Ok((
            serde_json::to_value(options)?,
            Pending::Authentication(Box::new(state)),
        ))
    }

    /// Verifies the browser's answer to a sign-in (challenge, origin, user verification, the
    /// signature by the registered key, a signature counter that did not go back).
    pub fn finish_authentication(
        &self,
        answer: &serde_json::Value,
        state: &PasskeyAuthentication,
    ) -> Result<Verified, String> {
        let answer: PublicKeyCredential = serde_json::from_value(answer.clone())
            .map_err(|e| format!("not a WebAuthn sign-in: {e}"))?;
        let result = self
            .webauthn
            .finish_passkey_authentication(&answer, state)
            .map_err(|e| format!("the sign-in does not verify: {e}"))?;
        if !result.user_verified() {
            return Err("the authenticator did not verify the user".into());
        }
        Ok(Verified {
            credential_id: URL_SAFE_NO_PAD.encode(result.cred_id().as_slice()),
            result,
        })
    }
}

/// A sign-in that verified: the credential used, and what the authenticator reported (its
/// signature counter, for the stored passkey to follow).
pub struct Verified {
    /// base64url.
    pub credential_id: String,
    pub result: webauthn_rs::prelude::AuthenticationResult,
}

/// The AAGUID and the COSE public key's exact bytes from a verified attestation object.
/// webauthn-rs keeps the key in its own form; the log records the standard one, so it is
/// read here from the authenticator data (WebAuthn §6.1: rpIdHash 32, flags 1, signCount 4,
/// then aaguid 16, credentialIdLength 2, credentialId, credentialPublicKey as CBOR).
fn attested_key(attestation_object: &[u8]) -> Result<(Uuid, Vec<u8>), String> {
    let object: serde_cbor_2::Value = serde_cbor_2::from_slice(attestation_object)
        .map_err(|e| format!("the attestation object is not CBOR: {e}"))?;
    let serde_cbor_2::Value::Map(map) = object else {
        return Err("the attestation object is not a map".into());
    };
    let Some(serde_cbor_2::Value::Bytes(data)) =
        map.get(&serde_cbor_2::Value::Text("authData".into()))
    else {
        return Err("the attestation object has no authData".into());
    };
    let short = || "the authenticator data is too short".to_owned();
    let aaguid =
        Uuid::from_slice(data.get(37..53).ok_or_else(short)?).map_err(|e| e.to_string())?;
    let length =
        u16::from_be_bytes(data.get(53..55).ok_or_else(short)?.try_into().expect("two")) as usize;
    let key_start = 55 + length;
    let rest = data.get(key_start..).ok_or_else(short)?;
    // One CBOR item: the key. Extensions may follow it.
    let mut reader = serde_cbor_2::Deserializer::from_slice(rest);
    let _: serde_cbor_2::Value = serde::Deserialize::deserialize(&mut reader)
        .map_err(|e| format!("the credential public key is not CBOR: {e}"))?;
    let used = reader.byte_offset();
    Ok((aaguid, rest[..used].to_vec()))
}
