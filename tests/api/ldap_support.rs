//! A private OpenLDAP `slapd` per test: temp config dir, generated `slapd.conf`, a test CA and a
//! server certificate made with rcgen (SAN `localhost` only), `ldap://` (StartTLS) and
//! `ldaps://` listeners on free loopback ports, seeded with `ldapadd` from an LDIF. No system
//! service is used. Needs the Debian packages `slapd` and `ldap-utils` (installed by `.ci/run`).

#![allow(dead_code)]

use std::io::Write;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

pub const BASE: &str = "dc=corp,dc=example";
pub const ADMIN_DN: &str = "cn=admin,dc=corp,dc=example";
pub const SVC_DN: &str = "cn=svc,dc=corp,dc=example";
pub const SVC_PW: &str = "svc-Secret-4711";

/// Test PKI: a CA, a server certificate for `localhost` signed by it, and an unrelated CA.
pub struct Pki {
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key: String,
    pub other_ca_pem: String,
}

fn ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let k = rcgen::KeyPair::generate().unwrap();
    (p.self_signed(&k).unwrap(), k)
}

impl Pki {
    pub fn new() -> Self {
        let (ca_cert, ca_key) = ca("FlowGuard test directory CA");
        let (other, _) = ca("Some other CA");
        let mut sp = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        sp.distinguished_name
            .push(rcgen::DnType::CommonName, "localhost");
        let sk = rcgen::KeyPair::generate().unwrap();
        let server = sp.signed_by(&sk, &ca_cert, &ca_key).unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            server_pem: server.pem(),
            server_key: sk.serialize_pem(),
            other_ca_pem: other.pem(),
        }
    }
}

/// A running slapd.
pub struct Slapd {
    pub dir: TempDir,
    pub ldap_port: u16,
    pub ldaps_port: u16,
    pub tls: bool,
    child: Option<Child>,
    pub log: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn bin(name: &str) -> String {
    for d in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let p = format!("{d}/{name}");
        if std::path::Path::new(&p).exists() {
            return p;
        }
    }
    panic!("{name} not found: install the Debian packages slapd and ldap-utils (see .ci/run)");
}

/// The seed directory (users first, then groups with user members, then nested memberships
/// through ldapmodify so the memberof overlay records every group-in-group link).
pub const USERS_LDIF: &str = r#"dn: dc=corp,dc=example
objectClass: dcObject
objectClass: organization
o: corp
dc: corp

dn: ou=people,dc=corp,dc=example
objectClass: organizationalUnit
ou: people

dn: ou=groups,dc=corp,dc=example
objectClass: organizationalUnit
ou: groups

dn: cn=svc,dc=corp,dc=example
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: svc
userPassword: svc-Secret-4711

dn: uid=alice,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: alice
cn: Alice Admin
sn: Admin
mail: alice@corp.example
userPassword: alice-pw-1

dn: cn=Doe\, Jane,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: jdoe
cn: Doe, Jane
sn: Doe
mail: Jane.Doe@corp.example
userPassword: jane-pw-1

dn: uid=s*(tar,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: s*(tar
cn: S*(tar Wild
sn: Wild
mail: star@corp.example
userPassword: star-pw-1

dn: uid=carol,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: carol
cn: Carol Oncall
sn: Oncall
mail: carol@corp.example
userPassword: carol-pw-1

dn: uid=dave,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: dave
cn: Dave Nogroup
sn: Nogroup
mail: dave@corp.example
userPassword: dave-pw-1

dn: uid=eve,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: eve
cn: Eve Loop
sn: Loop
mail: eve@corp.example
userPassword: eve-pw-1

dn: uid=olivia,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: olivia
cn: Olivia Owner
sn: Owner
mail: olivia@corp.example
userPassword: olivia-pw-1

dn: uid=mallory,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: mallory
cn: Mallory
sn: Mallory
mail: admin@localhost
userPassword: mallory-pw-1

dn: uid=nomail,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: nomail
cn: No Mail
sn: Mail
userPassword: nomail-pw-1

dn: cn=twin one,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: twin
cn: twin one
sn: one
mail: twin1@corp.example
userPassword: twin-pw-1

dn: cn=twin two,ou=people,dc=corp,dc=example
objectClass: inetOrgPerson
uid: twin
cn: twin two
sn: two
mail: twin2@corp.example
userPassword: twin-pw-1

dn: cn=fg-owners,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: fg-owners
member: uid=olivia,ou=people,dc=corp,dc=example

dn: cn=fg-admins,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: fg-admins
member: uid=alice,ou=people,dc=corp,dc=example

dn: cn=ops-oncall,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: ops-oncall
member: uid=carol,ou=people,dc=corp,dc=example

dn: cn=Ops\, EMEA,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: Ops, EMEA
member: cn=Doe\, Jane,ou=people,dc=corp,dc=example

dn: cn=fg-viewers,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: fg-viewers
member: cn=Doe\, Jane,ou=people,dc=corp,dc=example

dn: cn=fg-testers,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: fg-testers
member: uid=s*(tar,ou=people,dc=corp,dc=example

dn: cn=loop-a,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: loop-a
member: uid=eve,ou=people,dc=corp,dc=example

dn: cn=loop-b,ou=groups,dc=corp,dc=example
objectClass: groupOfNames
cn: loop-b
member: cn=admin,dc=corp,dc=example
"#;

/// Group-in-group links: ops-oncall ∈ fg-admins; loop-a ∈ loop-b ∈ loop-a (a cycle);
/// loop-b ∈ fg-testers.
pub const NESTED_LDIF: &str = r#"dn: cn=fg-admins,ou=groups,dc=corp,dc=example
changetype: modify
add: member
member: cn=ops-oncall,ou=groups,dc=corp,dc=example

dn: cn=loop-b,ou=groups,dc=corp,dc=example
changetype: modify
add: member
member: cn=loop-a,ou=groups,dc=corp,dc=example

dn: cn=loop-a,ou=groups,dc=corp,dc=example
changetype: modify
add: member
member: cn=loop-b,ou=groups,dc=corp,dc=example

dn: cn=fg-testers,ou=groups,dc=corp,dc=example
changetype: modify
add: member
member: cn=loop-b,ou=groups,dc=corp,dc=example
"#;

impl Slapd {
    /// Start a seeded slapd; `tls` false gives a server that refuses StartTLS and has no
    /// `ldaps://` listener.
    pub fn start(pki: &Pki, tls: bool) -> Self {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::try_start(pki, tls) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("slapd did not start: {last}");
    }

    fn try_start(pki: &Pki, tls: bool) -> Result<Self, String> {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("db")).unwrap();
        std::fs::write(d.join("ca.pem"), &pki.ca_pem).unwrap();
        std::fs::write(d.join("server.pem"), &pki.server_pem).unwrap();
        std::fs::write(d.join("server.key"), &pki.server_key).unwrap();
        let tls_conf = if tls {
            format!(
                "TLSCACertificateFile {0}/ca.pem\nTLSCertificateFile {0}/server.pem\nTLSCertificateKeyFile {0}/server.key\n",
                d.display()
            )
        } else {
            String::new()
        };
        let conf = format!(
            r#"include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload memberof
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
{tls_conf}
database mdb
maxsize 16777216
suffix "{BASE}"
rootdn "{ADMIN_DN}"
rootpw admin-pw
directory {dir}/db
overlay memberof
access to attrs=userPassword by anonymous auth by self read by * none
access to * by users read by * none
"#,
            dir = d.display()
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        let ldap_port = free_port();
        let ldaps_port = free_port();
        let mut urls = format!("ldap://127.0.0.1:{ldap_port}/");
        if tls {
            urls.push_str(&format!(" ldaps://127.0.0.1:{ldaps_port}/"));
        }
        let log = d.join("slapd.log");
        let logf = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin("slapd"))
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-h")
            .arg(&urls)
            .arg("-d")
            .arg("256")
            .stdin(Stdio::null())
            .stdout(Stdio::from(logf.try_clone().unwrap()))
            .stderr(Stdio::from(logf))
            .spawn()
            .map_err(|e| format!("spawn slapd: {e}"))?;
        let mut s = Slapd {
            dir,
            ldap_port,
            ldaps_port,
            tls,
            child: Some(child),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect((Ipv4Addr::LOCALHOST, ldap_port)).is_ok() {
                break;
            }
            if let Some(Ok(Some(st))) = s.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("slapd exited with {st}: {}", s.log_text()));
            }
            if Instant::now() > deadline {
                return Err(format!("slapd not listening: {}", s.log_text()));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        s.ldap_modify(USERS_LDIF, true);
        s.ldap_modify(NESTED_LDIF, false);
        Ok(s)
    }

    /// Apply LDIF as the rootdn over loopback (test seeding only).
    pub fn ldap_modify(&self, ldif: &str, add: bool) {
        let mut cmd = Command::new(bin("ldapmodify"));
        if add {
            cmd.arg("-a");
        }
        let mut child = cmd
            .args(["-x", "-H"])
            .arg(format!("ldap://127.0.0.1:{}", self.ldap_port))
            .args(["-D", ADMIN_DN, "-w", "admin-pw"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ldapmodify");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ldif.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "ldapmodify failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A position in the log (to look only at what happened afterwards).
    pub fn mark(&self) -> usize {
        self.log_text().len()
    }

    /// The log after `mark`.
    pub fn log_since(&self, mark: usize) -> String {
        self.log_text().get(mark..).unwrap_or("").to_string()
    }

    /// Number of BIND operations the server has seen.
    pub fn binds(&self) -> usize {
        self.log_text().matches(" BIND dn=").count()
    }

    /// Number of connections the server has accepted.
    pub fn connections(&self) -> usize {
        self.log_text().matches(" ACCEPT from").count()
    }

    /// Stop the server (SIGKILL) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn ldaps_url(&self) -> String {
        format!("ldaps://localhost:{}", self.ldaps_port)
    }

    pub fn starttls_url(&self) -> String {
        format!("ldap://localhost:{}", self.ldap_port)
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Appliance config allowing loopback directories.
pub const APP_CONFIG: &str = "[egress]\nallow = [\"localhost\", \"127.0.0.0/8\"]\n";

/// A full `PUT /api/v1/sso/ldap` body for the seeded directory (group search, nested on),
/// with `over` merged on top.
pub fn config_body(url: &str, ca_pem: &str, over: Value) -> Value {
    let mut v = json!({
        "enabled": true,
        "url": url,
        "starttls": url.starts_with("ldap://"),
        "ca_pem": ca_pem,
        "bind_dn": SVC_DN,
        "bind_password": SVC_PW,
        "user_base": "ou=people,dc=corp,dc=example",
        "user_filter": "(&(objectClass=inetOrgPerson)(uid={username}))",
        "email_attr": "mail",
        "name_attr": "cn",
        "group_base": "ou=groups,dc=corp,dc=example",
        "group_filter": "(&(objectClass=groupOfNames)(member={dn}))",
        "nested_groups": true,
        "role_mapping": [
            {"group_dn": "cn=fg-owners,ou=groups,dc=corp,dc=example", "role": "Owner"},
            {"group_dn": "CN=FG-Admins, OU=Groups, DC=corp, DC=example", "role": "Admin"},
            {"group_dn": "cn=Ops\\2c EMEA,ou=groups,dc=corp,dc=example", "role": "Tester"},
            {"group_dn": "cn=fg-testers,ou=groups,dc=corp,dc=example", "role": "tester"},
            {"group_dn": "cn=fg-viewers,ou=groups,dc=corp,dc=example", "role": "Viewer"}
        ],
        "default_role": "Viewer",
        "connect_timeout_ms": 1500,
        "op_timeout_ms": 1500
    });
    if let (Some(m), Some(o)) = (v.as_object_mut(), over.as_object()) {
        for (k, val) in o {
            m.insert(k.clone(), val.clone());
        }
    }
    v
}
