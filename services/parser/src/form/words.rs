//! What website form notifications look like: data only, read by [`super`].
//!
//! - [`ROBOTS`]: local parts of the addresses websites and form services send from;
//! - [`PROVIDERS`]: form plugins and services, told by the sender's domain or by a phrase of
//!   their notification (footer, subject, mailer);
//! - [`FIELDS`]: the labels of the fields that say who filled the form in, per role, in the
//!   languages of the reply stripper's locales that sites most often use. Labels are compared
//!   lower-cased, with `-`, `_`, `*` and a trailing `:` or `?` set aside (`your-name` is
//!   `your name`).

/// Local parts (without a `+tag`) of senders that are websites or robots.
pub const ROBOTS: &[&str] = &[
    "noreply",
    "no-reply",
    "no_reply",
    "donotreply",
    "do-not-reply",
    "do_not_reply",
    "wordpress",
    "forms",
    "form",
    "webform",
    "webforms",
    "notifications",
    "notification",
    "notify",
    "mailer",
    "website",
    "web",
    "webmaster",
    "admin",
    "info",
    "contact",
    "hello",
    "leads",
    "submissions",
];

/// A form plugin or service: its name, sender domains (suffixes), and phrases (lower case) of
/// its notifications' body, subject or `X-Mailer`.
pub struct Provider {
    pub name: &'static str,
    pub domains: &'static [&'static str],
    pub phrases: &'static [&'static str],
}

pub const PROVIDERS: &[Provider] = &[
    Provider {
        name: "contact-form-7",
        domains: &[],
        phrases: &["sent from a contact form on", "contact form 7"],
    },
    Provider {
        name: "gravity-forms",
        domains: &[],
        phrases: &["gravity forms", "gravityforms"],
    },
    Provider {
        name: "wpforms",
        domains: &[],
        phrases: &["wpforms"],
    },
    Provider {
        name: "ninja-forms",
        domains: &[],
        phrases: &["ninja forms"],
    },
    Provider {
        name: "elementor",
        domains: &[],
        phrases: &["powered by elementor", "elementor form"],
    },
    Provider {
        name: "hubspot",
        domains: &["hubspot.com", "hubspotemail.net", "hs-inbox.com"],
        phrases: &["hubspot"],
    },
    Provider {
        name: "typeform",
        domains: &["typeform.com"],
        phrases: &["typeform"],
    },
    Provider {
        name: "webflow",
        domains: &["webflow.com", "webflow.io"],
        phrases: &["webflow"],
    },
    Provider {
        name: "jotform",
        domains: &["jotform.com"],
        phrases: &["jotform"],
    },
    Provider {
        name: "wufoo",
        domains: &["wufoo.com"],
        phrases: &["wufoo"],
    },
    Provider {
        name: "formspree",
        domains: &["formspree.io"],
        phrases: &["formspree"],
    },
    Provider {
        name: "netlify",
        domains: &["netlify.com", "netlify.app"],
        phrases: &["netlify"],
    },
    Provider {
        name: "squarespace",
        domains: &["squarespace.com", "squarespace.info"],
        phrases: &["squarespace"],
    },
    Provider {
        name: "wix",
        domains: &["wix.com", "wixforms.com"],
        phrases: &["wix forms"],
    },
];

/// Phrases of a form notification whatever made it (subject or body, lower case).
pub const NOTIFICATION_PHRASES: &[&str] = &[
    "new form submission",
    "new submission",
    "form submission",
    "new entry",
    "new response",
    "new lead from",
    "contact form",
    "website enquiry",
    "website inquiry",
    "neue anfrage",
    "kontaktformular",
    "formulaire de contact",
    "formulario de contacto",
];

/// Mailers of websites (`X-Mailer`): PHP sites and WordPress.
pub const SITE_MAILERS: &[&str] = &["phpmailer", "wpmailsmtp", "wordpress", "wp mail smtp"];

/// What a field says about the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Name,
    FirstName,
    LastName,
    Email,
    Phone,
    Company,
    Message,
}

/// The labels of each role.
pub const FIELDS: &[(Role, &[&str])] = &[
    (
        Role::Name,
        &[
            "name",
            "full name",
            "your name",
            "contact name",
            "fullname",
            "nome",
            "nombre",
            "nom",
            "naam",
            "vor und nachname",
            "vor  und nachname",
            "ihr name",
            "votre nom",
            "tu nombre",
            "il tuo nome",
            "what's your name",
            "what is your name",
            "your full name",
        ],
    ),
    (
        Role::FirstName,
        &[
            "first name",
            "firstname",
            "given name",
            "vorname",
            "prénom",
            "prenom",
            "nome proprio",
            "voornaam",
        ],
    ),
    (
        Role::LastName,
        &[
            "last name",
            "lastname",
            "surname",
            "family name",
            "nachname",
            "nom de famille",
            "apellido",
            "apellidos",
            "cognome",
            "achternaam",
        ],
    ),
    (
        Role::Email,
        &[
            "email",
            "e mail",
            "email address",
            "e mail address",
            "your email",
            "your e mail",
            "work email",
            "business email",
            "mail",
            "e mail adresse",
            "ihre e mail adresse",
            "ihre e mail",
            "courriel",
            "adresse e mail",
            "adresse email",
            "votre email",
            "correo",
            "correo electrónico",
            "correo electronico",
            "tu email",
            "la tua email",
            "what's your email",
            "what is your email",
            "what's your email address",
        ],
    ),
    (
        Role::Phone,
        &[
            "phone",
            "phone number",
            "your phone",
            "telephone",
            "telephone number",
            "tel",
            "mobile",
            "mobile phone",
            "mobile number",
            "cell",
            "telefon",
            "telefonnummer",
            "téléphone",
            "telephone",
            "teléfono",
            "telefono",
            "telefoonnummer",
        ],
    ),
    (
        Role::Company,
        &[
            "company",
            "company name",
            "your company",
            "organization",
            "organisation",
            "organization name",
            "business",
            "business name",
            "firma",
            "unternehmen",
            "firmenname",
            "société",
            "societe",
            "entreprise",
            "empresa",
            "azienda",
            "bedrijf",
            "what's your company",
        ],
    ),
    (
        Role::Message,
        &[
            "message",
            "your message",
            "comments",
            "comment",
            "enquiry",
            "inquiry",
            "details",
            "how can we help",
            "how can we help you",
            "request",
            "question",
            "notes",
            "nachricht",
            "ihre nachricht",
            "mitteilung",
            "anliegen",
            "votre message",
            "mensaje",
            "messaggio",
            "bericht",
            "what can we help you with",
        ],
    ),
];
