//! Amazon SNS HTTP(S) deliveries: the message document and its signature, as AWS documents
//! them ("Verifying the signatures of Amazon SNS messages").
//!
//! The signed string is the values of a fixed list of keys, each as `key LF value LF`, in byte
//! order of the keys: for a `Notification` `Message`, `MessageId`, `Subject` (only when
//! present), `Timestamp`, `TopicArn`, `Type`; for a `SubscriptionConfirmation` or an
//! `UnsubscribeConfirmation` `Message`, `MessageId`, `SubscribeURL`, `Timestamp`, `Token`,
//! `TopicArn`, `Type`. `Signature` is the base64 RSA PKCS#1 v1.5 signature of it with SHA-256
//! (`SignatureVersion` 2) by the certificate at `SigningCertURL`. That URL cannot be fetched
//! here, so the certificate is a configured file (`ses_certificate_path`); SHA-1 signatures
//! (`SignatureVersion` 1, the default of a topic) are refused: set the topic's
//! `SignatureVersion` attribute to 2.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;

/// An SNS message as posted (the fields used).
#[derive(Deserialize, Debug)]
#[serde(rename_all = "PascalCase")]
pub(super) struct SnsMessage {
    #[serde(rename = "Type")]
    pub kind: String,
    pub message_id: String,
    pub topic_arn: String,
    #[serde(default)]
    pub subject: Option<String>,
    pub message: String,
    pub timestamp: String,
    pub signature_version: String,
    pub signature: String,
    #[serde(rename = "SubscribeURL", default)]
    pub subscribe_url: Option<String>,
    #[serde(default)]
    pub token: Option<String>,
}

impl SnsMessage {
    /// The string SNS signed for this message's type, or `None` for an unknown type or a
    /// confirmation without its `SubscribeURL` and `Token`.
    pub fn string_to_sign(&self) -> Option<String> {
        let mut fields: Vec<(&str, &str)> =
            vec![("Message", &self.message), ("MessageId", &self.message_id)];
        match self.kind.as_str() {
            "Notification" => {
                if let Some(subject) = &self.subject {
                    fields.push(("Subject", subject));
                }
            }
            "SubscriptionConfirmation" | "UnsubscribeConfirmation" => {
                fields.push(("SubscribeURL", self.subscribe_url.as_deref()?));
            }
            _ => return None,
        }
        fields.push(("Timestamp", &self.timestamp));
        if self.kind != "Notification" {
            fields.push(("Token", self.token.as_deref()?));
        }
        fields.push(("TopicArn", &self.topic_arn));
        fields.push(("Type", &self.kind));
        Some(
            fields
                .into_iter()
                .map(|(k, v)| format!("{k}\n{v}\n"))
                .collect(),
        )
    }
}

/// The SNS signing certificate (DER), from the configured PEM file.
pub(super) struct SigningCert {
    der: CertificateDer<'static>,
}

impl SigningCert {
    /// The first certificate of the PEM file at `path`, checked to parse as X.509.
    pub fn load(path: &std::path::Path) -> Result<Self, String> {
        let der = CertificateDer::from_pem_file(path)
            .map_err(|e| format!("no PEM certificate in {}: {e}", path.display()))?;
        webpki::EndEntityCert::try_from(&der)
            .map_err(|e| format!("{} is not an X.509 certificate: {e:?}", path.display()))?;
        Ok(Self { der })
    }

    /// Whether `message` carries a valid SHA-256 signature by this certificate.
    pub fn verifies(&self, message: &SnsMessage) -> Result<(), String> {
        if message.signature_version != "2" {
            return Err(format!(
                "SignatureVersion {} (SHA-1) is not accepted: set the topic's SignatureVersion to 2",
                message.signature_version
            ));
        }
        let text = message.string_to_sign().ok_or_else(|| {
            format!(
                "unknown or incomplete SNS message of Type `{}`",
                message.kind
            )
        })?;
        let signature = STANDARD
            .decode(message.signature.trim())
            .map_err(|_| "Signature is not base64".to_string())?;
        let cert = webpki::EndEntityCert::try_from(&self.der)
            .map_err(|e| format!("the signing certificate: {e:?}"))?;
        cert.verify_signature(
            webpki::aws_lc_rs::RSA_PKCS1_2048_8192_SHA256,
            text.as_bytes(),
            &signature,
        )
        .map_err(|_| "the signature does not verify with the configured SNS certificate".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notification(subject: Option<&str>) -> SnsMessage {
        SnsMessage {
            kind: "Notification".into(),
            message_id: "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324".into(),
            topic_arn: "arn:aws:sns:us-west-2:123456789012:MyTopic".into(),
            subject: subject.map(str::to_string),
            message: "Hello world!".into(),
            timestamp: "2012-05-02T00:54:06.655Z".into(),
            signature_version: "2".into(),
            signature: String::new(),
            subscribe_url: None,
            token: None,
        }
    }

    #[test]
    fn the_string_to_sign_follows_the_documented_key_order() {
        assert_eq!(
            notification(Some("My First Message"))
                .string_to_sign()
                .as_deref(),
            Some(
                "Message\nHello world!\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
                 Subject\nMy First Message\nTimestamp\n2012-05-02T00:54:06.655Z\n\
                 TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\nType\nNotification\n"
            )
        );
        assert!(
            !notification(None)
                .string_to_sign()
                .expect("signed")
                .contains("Subject")
        );
        let mut confirm = notification(None);
        confirm.kind = "SubscriptionConfirmation".into();
        assert!(
            confirm.string_to_sign().is_none(),
            "needs SubscribeURL and Token"
        );
        confirm.subscribe_url = Some("https://sns.example/?Action=ConfirmSubscription".into());
        confirm.token = Some("tok".into());
        assert_eq!(
            confirm.string_to_sign().as_deref(),
            Some(
                "Message\nHello world!\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
                 SubscribeURL\nhttps://sns.example/?Action=ConfirmSubscription\n\
                 Timestamp\n2012-05-02T00:54:06.655Z\nToken\ntok\n\
                 TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\nType\nSubscriptionConfirmation\n"
            )
        );
    }
}
