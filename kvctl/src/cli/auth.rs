//! Authentication and authorization commands, as etcdctl has them:
//! `auth enable|disable|status`, `user ...`, `role ...`; and reading
//! passwords (without echo on a terminal, one line from stdin otherwise).

use std::fmt;
use std::io::{BufRead, IsTerminal};

use anyhow::{Context, bail};
use clap::{ArgAction, Args, Subcommand};
use kvclient::{
    AuthChanged, PasswordRequest, Permission, PermissionKeys, PermissionKind, RoleAddRequest,
    RoleInfo, UserAddRequest, UserInfo,
};

use super::Ctx;
use crate::table::escape;

/// A password from the command line. Its Debug output hides it, so the
/// parsed command line can be printed without leaking it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// `--user NAME[:PASSWORD]`, kept whole until `--password` says whether the
/// colon separates a password. Debug shows only the part before the colon.
#[derive(Clone, PartialEq, Eq)]
pub struct UserFlag(pub String);

impl fmt::Debug for UserFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.split_once(':') {
            Some((name, _)) => write!(f, "{name:?}:<redacted>"),
            None => write!(f, "{:?}", self.0),
        }
    }
}

impl std::str::FromStr for UserFlag {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(UserFlag(s.to_owned()))
    }
}

/// Who to authenticate as, from `--user` and `--password` (etcdctl's
/// rules): with `--password` the whole of `--user` is the name; without it
/// `NAME:PASSWORD` splits at the first colon, and a bare `NAME` leaves the
/// password to be asked for (`None`).
pub fn user_and_password(
    user: Option<&UserFlag>,
    password: Option<&Secret>,
) -> anyhow::Result<Option<(String, Option<String>)>> {
    let Some(UserFlag(user)) = user else {
        if password.is_some() {
            bail!("--password needs --user");
        }
        return Ok(None);
    };
    let (name, password) = match (password, user.split_once(':')) {
        (Some(Secret(p)), _) => (user.as_str(), Some(p.clone())),
        (None, Some((name, p))) => (name, Some(p.to_owned())),
        (None, None) => (user.as_str(), None),
    };
    if name.is_empty() {
        bail!("--user needs a user name");
    }
    Ok(Some((name.to_owned(), password)))
}

/// Reads a password: on a terminal without echo after `prompt` (and, with
/// `confirm`, a second time to check it), otherwise the first line of
/// stdin, so scripts can pipe it in.
pub fn read_password(prompt: &str, confirm: Option<&str>) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let pw = rpassword::prompt_password(prompt).context("reading the password")?;
        if let Some(again) = confirm {
            let pw2 = rpassword::prompt_password(again).context("reading the password")?;
            if pw != pw2 {
                bail!("the passwords do not match");
            }
        }
        return Ok(pw);
    }
    read_password_line(&mut std::io::stdin().lock())
}

/// The first line of `input` without its line ending; the rest stays
/// unread (for `put K -`, the value follows the password).
fn read_password_line(input: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    let n = input
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    if n == 0 {
        bail!("no password: stdin is empty and not a terminal");
    }
    let pw = line.strip_suffix('\n').unwrap_or(&line);
    Ok(pw.strip_suffix('\r').unwrap_or(pw).to_owned())
}

#[derive(Subcommand, Debug)]
pub enum AuthCmd {
    /// Turn authentication on (needs the user `root` with the role `root`).
    Enable,
    /// Turn authentication off.
    Disable,
    /// Whether authentication is on, and the auth revision.
    Status,
}

#[derive(Subcommand, Debug)]
pub enum UserCmd {
    /// Add a user.
    Add(UserAddArgs),
    /// Delete a user.
    Delete(NameArg),
    /// List the users.
    List,
    /// A user's roles (with --detail, each role's permissions too).
    Get(UserGetArgs),
    /// Change a user's password.
    Passwd(PasswdArgs),
    /// Give a user a role.
    GrantRole(UserRoleArgs),
    /// Take a role from a user.
    RevokeRole(UserRoleArgs),
}

#[derive(Subcommand, Debug)]
pub enum RoleCmd {
    /// Add a role.
    Add(NameArg),
    /// Delete a role.
    Delete(NameArg),
    /// List the roles.
    List,
    /// A role's permissions.
    Get(NameArg),
    /// Let a role read and/or write a key, a range [KEY, RANGE_END) or a prefix.
    GrantPermission(GrantPermissionArgs),
    /// Take a permission from a role (name the keys as they were granted).
    RevokePermission(PermissionKeysArgs),
}

#[derive(Args, Debug)]
pub struct NameArg {
    pub name: String,
}

/// `--interactive[=BOOL]`, on by default as in etcdctl.
// `require_equals`: `--interactive false` would take `false` for a name.
#[derive(Args, Debug)]
pub struct Interactive {
    /// Prompt for the password on the terminal (default); --interactive=false reads it from stdin.
    #[arg(
        long,
        action = ArgAction::Set,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub interactive: bool,
}

#[derive(Args, Debug)]
pub struct UserGetArgs {
    pub name: String,
    /// Show the permissions of each of the user's roles.
    #[arg(long)]
    pub detail: bool,
}

#[derive(Args, Debug)]
pub struct UserAddArgs {
    /// NAME, or NAME:PASSWORD (split at the first colon unless a password option is given).
    pub name: String,
    /// The new user's password (else it is asked for).
    #[arg(long, conflicts_with = "no_password")]
    pub new_user_password: Option<Secret>,
    /// A user without a password, who can only authenticate with a client certificate.
    #[arg(long)]
    pub no_password: bool,
    #[command(flatten)]
    pub interactive: Interactive,
}

#[derive(Args, Debug)]
pub struct PasswdArgs {
    pub name: String,
    /// The new password (else it is asked for).
    #[arg(long)]
    pub new_user_password: Option<Secret>,
    #[command(flatten)]
    pub interactive: Interactive,
}

#[derive(Args, Debug)]
pub struct UserRoleArgs {
    pub name: String,
    pub role: String,
}

#[derive(Args, Debug)]
pub struct GrantPermissionArgs {
    pub role: String,
    /// read, write or readwrite.
    #[arg(value_parser = parse_permission_kind)]
    pub permission: PermissionKind,
    #[command(flatten)]
    pub keys: KeysArgs,
}

#[derive(Args, Debug)]
pub struct PermissionKeysArgs {
    pub role: String,
    #[command(flatten)]
    pub keys: KeysArgs,
}

/// The keys of a permission, as etcdctl names them.
#[derive(Args, Debug)]
pub struct KeysArgs {
    /// The key; with RANGE_END the start of the range; with --prefix the prefix.
    pub key: String,
    /// The end of the range [KEY, RANGE_END), not included.
    #[arg(conflicts_with = "prefix")]
    pub range_end: Option<String>,
    /// Every key that starts with KEY (`--prefix ""` is every key).
    #[arg(long)]
    pub prefix: bool,
}

impl KeysArgs {
    pub fn to_keys(&self) -> PermissionKeys {
        PermissionKeys {
            key: self.key.clone(),
            range_end: self.range_end.clone(),
            prefix: self.prefix,
        }
    }
}

/// `read`, `write` or `readwrite`, in any case (etcdctl accepts `READ`).
pub fn parse_permission_kind(s: &str) -> Result<PermissionKind, String> {
    match s.to_ascii_lowercase().as_str() {
        "read" => Ok(PermissionKind::Read),
        "write" => Ok(PermissionKind::Write),
        "readwrite" => Ok(PermissionKind::Readwrite),
        _ => Err(format!(
            "{s:?} is not a permission: use read, write or readwrite"
        )),
    }
}

impl GrantPermissionArgs {
    pub fn to_permission(&self) -> Permission {
        let keys = self.keys.to_keys();
        Permission {
            permission: self.permission,
            key: keys.key,
            range_end: keys.range_end,
            prefix: keys.prefix,
        }
    }
}

/// How a permission's keys are shown: `k`, `[a, c)` or `prefix app/`.
fn keys_text(key: &str, range_end: Option<&str>, prefix: bool) -> String {
    match (prefix, range_end) {
        (true, _) if key.is_empty() => "every key (prefix \"\")".into(),
        (true, _) => format!("prefix {}", escape(key)),
        (false, Some(end)) => format!("[{}, {})", escape(key), escape(end)),
        (false, None) => escape(key),
    }
}

fn role_text(r: &RoleInfo) -> String {
    let mut out = format!("Role {}\n", escape(&r.name));
    for (title, allows) in [
        (
            "KV Read:",
            PermissionKind::allows_read as fn(PermissionKind) -> bool,
        ),
        ("KV Write:", PermissionKind::allows_write),
    ] {
        out.push_str(title);
        out.push('\n');
        for p in r.permissions.iter().filter(|p| allows(p.permission)) {
            out.push('\t');
            out.push_str(&keys_text(&p.key, p.range_end.as_deref(), p.prefix));
            out.push('\n');
        }
    }
    out
}

fn user_text(u: &UserInfo) -> String {
    let roles: Vec<String> = u.roles.iter().map(|r| escape(r)).collect();
    format!("User: {}\nRoles: {}", escape(&u.name), roles.join(" "))
}

pub async fn auth(ctx: &Ctx, cmd: AuthCmd) -> anyhow::Result<()> {
    let c = &ctx.client;
    let (st, text) = match cmd {
        AuthCmd::Enable => (c.auth_enable().await?, None),
        AuthCmd::Disable => (c.auth_disable().await?, None),
        AuthCmd::Status => (c.auth_status().await?, Some(())),
    };
    ctx.out.emit(&st, || match text {
        Some(()) => format!(
            "Authentication Status: {}\nAuthRevision: {}",
            st.enabled, st.revision
        ),
        None if st.enabled => "Authentication Enabled".into(),
        None => "Authentication Disabled".into(),
    })
}

/// The password of `user add`/`user passwd` when no option gave it.
fn new_password(name: &str, interactive: bool) -> anyhow::Result<String> {
    if interactive {
        read_password(
            &format!("Password of {name}: "),
            Some(&format!("Type password of {name} again for confirmation: ")),
        )
    } else {
        read_password_line(&mut std::io::stdin().lock())
    }
}

/// The user and password that `user add` creates.
fn user_to_add(a: &UserAddArgs) -> anyhow::Result<UserAddRequest> {
    let (name, password) = match (&a.new_user_password, a.no_password) {
        (Some(Secret(p)), _) => (a.name.clone(), Some(p.clone())),
        (None, true) => (a.name.clone(), None),
        (None, false) => match a.name.split_once(':') {
            Some((name, p)) => (name.to_owned(), Some(p.to_owned())),
            None => {
                let p = new_password(&a.name, a.interactive.interactive)?;
                (a.name.clone(), Some(p))
            }
        },
    };
    if name.is_empty() {
        bail!("a user needs a name");
    }
    Ok(UserAddRequest {
        name,
        password,
        roles: vec![],
    })
}

fn changed(ctx: &Ctx, r: &AuthChanged, text: String) -> anyhow::Result<()> {
    ctx.out.emit(r, || text)
}

pub async fn user(ctx: &Ctx, cmd: UserCmd) -> anyhow::Result<()> {
    let c = &ctx.client;
    match cmd {
        UserCmd::Add(a) => {
            let req = user_to_add(&a)?;
            let r = c.user_add(&req).await?;
            changed(ctx, &r, format!("User {} created", escape(&req.name)))
        }
        UserCmd::Delete(a) => {
            let r = c.user_delete(&a.name).await?;
            changed(ctx, &r, format!("User {} deleted", escape(&a.name)))
        }
        UserCmd::List => {
            let list = c.user_list().await?;
            if list.users.is_empty() && !ctx.out.is_json() {
                return Ok(());
            }
            ctx.out.emit(&list, || lines(&list.users))
        }
        UserCmd::Get(a) if a.detail => {
            let u = c.user_get(&a.name).await?;
            let mut roles = Vec::new();
            for r in &u.roles {
                roles.push(c.role_get(r).await?);
            }
            let json = serde_json::json!({ "user": u, "roles": roles });
            ctx.out.emit(&json, || {
                let mut text = format!("User: {}\n", escape(&u.name));
                text.extend(roles.iter().map(role_text));
                text
            })
        }
        UserCmd::Get(a) => {
            let u = c.user_get(&a.name).await?;
            ctx.out.emit(&u, || user_text(&u))
        }
        UserCmd::Passwd(a) => {
            let password = match a.new_user_password {
                Some(Secret(p)) => p,
                None => new_password(&a.name, a.interactive.interactive)?,
            };
            let req = PasswordRequest {
                password: Some(password),
            };
            let r = c.user_change_password(&a.name, &req).await?;
            changed(ctx, &r, "Password updated".into())
        }
        UserCmd::GrantRole(a) => {
            let r = c.user_grant_role(&a.name, &a.role).await?;
            let text = format!(
                "Role {} is granted to user {}",
                escape(&a.role),
                escape(&a.name)
            );
            changed(ctx, &r, text)
        }
        UserCmd::RevokeRole(a) => {
            let r = c.user_revoke_role(&a.name, &a.role).await?;
            let text = format!(
                "Role {} is revoked from user {}",
                escape(&a.role),
                escape(&a.name)
            );
            changed(ctx, &r, text)
        }
    }
}

pub async fn role(ctx: &Ctx, cmd: RoleCmd) -> anyhow::Result<()> {
    let c = &ctx.client;
    match cmd {
        RoleCmd::Add(a) => {
            let req = RoleAddRequest { name: a.name };
            let r = c.role_add(&req).await?;
            changed(ctx, &r, format!("Role {} created", escape(&req.name)))
        }
        RoleCmd::Delete(a) => {
            let r = c.role_delete(&a.name).await?;
            changed(ctx, &r, format!("Role {} deleted", escape(&a.name)))
        }
        RoleCmd::List => {
            let list = c.role_list().await?;
            if list.roles.is_empty() && !ctx.out.is_json() {
                return Ok(());
            }
            ctx.out.emit(&list, || lines(&list.roles))
        }
        RoleCmd::Get(a) => {
            let r = c.role_get(&a.name).await?;
            ctx.out.emit(&r, || role_text(&r))
        }
        RoleCmd::GrantPermission(a) => {
            let r = c.role_grant_permission(&a.role, &a.to_permission()).await?;
            changed(ctx, &r, format!("Role {} updated", escape(&a.role)))
        }
        RoleCmd::RevokePermission(a) => {
            let keys = a.keys.to_keys();
            let r = c.role_revoke_permission(&a.role, &keys).await?;
            let text = format!(
                "Permission of {} is revoked from role {}",
                keys_text(&keys.key, keys.range_end.as_deref(), keys.prefix),
                escape(&a.role)
            );
            changed(ctx, &r, text)
        }
    }
}

/// Names one per line (nothing at all for none).
fn lines(names: &[String]) -> String {
    names.iter().map(|n| escape(n) + "\n").collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(s: &str) -> UserFlag {
        UserFlag(s.into())
    }

    fn secret(s: &str) -> Secret {
        Secret(s.into())
    }

    #[test]
    fn user_flag_splits_at_the_first_colon_unless_password_is_given() {
        let got = |u: Option<&str>, p: Option<&str>| {
            user_and_password(u.map(flag).as_ref(), p.map(secret).as_ref())
        };
        assert_eq!(got(None, None).expect("none"), None);
        assert_eq!(
            got(Some("root:pw:with:colons"), None).expect("split"),
            Some(("root".into(), Some("pw:with:colons".into())))
        );
        assert_eq!(
            got(Some("root"), None).expect("prompt"),
            Some(("root".into(), None))
        );
        // An empty password after the colon is a password, not a prompt.
        assert_eq!(
            got(Some("root:"), None).expect("empty"),
            Some(("root".into(), Some(String::new())))
        );
        assert_eq!(
            got(Some("a:b"), Some("pw")).expect("whole name"),
            Some(("a:b".into(), Some("pw".into())))
        );
        assert!(got(None, Some("pw")).is_err());
        assert!(got(Some(":pw"), None).is_err());
        assert!(got(Some(""), None).is_err());
    }

    #[test]
    fn debug_output_hides_passwords() {
        assert_eq!(format!("{:?}", secret("hunter2")), "<redacted>");
        assert_eq!(format!("{:?}", flag("root:hunter2")), "\"root\":<redacted>");
        assert_eq!(format!("{:?}", flag("root")), "\"root\"");
    }

    #[test]
    fn a_piped_password_is_one_line_without_its_ending() {
        let mut input = std::io::Cursor::new(b"pa ss\r\nvalue\n".to_vec());
        assert_eq!(read_password_line(&mut input).expect("line"), "pa ss");
        // The rest is left for the command (`put K -`).
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut input, &mut rest).expect("rest");
        assert_eq!(rest, "value\n");
        let mut last = std::io::Cursor::new(b"no-newline".to_vec());
        assert_eq!(read_password_line(&mut last).expect("eof"), "no-newline");
        assert!(read_password_line(&mut std::io::Cursor::new(Vec::new())).is_err());
    }

    #[test]
    fn permission_kinds_parse_in_any_case() {
        assert_eq!(parse_permission_kind("read"), Ok(PermissionKind::Read));
        assert_eq!(parse_permission_kind("WRITE"), Ok(PermissionKind::Write));
        assert_eq!(
            parse_permission_kind("ReadWrite"),
            Ok(PermissionKind::Readwrite)
        );
        let err = parse_permission_kind("admin").expect_err("not a kind");
        assert!(err.contains("read, write or readwrite"), "{err}");
        assert!(parse_permission_kind("").is_err());
    }

    #[test]
    fn user_add_takes_the_password_from_the_name_or_an_option() {
        let add = |name: &str, pw: Option<&str>, none: bool| UserAddArgs {
            name: name.into(),
            new_user_password: pw.map(secret),
            no_password: none,
            interactive: Interactive { interactive: true },
        };
        let r = user_to_add(&add("bob:pw", None, false)).expect("split");
        assert_eq!(
            (r.name.as_str(), r.password.as_deref()),
            ("bob", Some("pw"))
        );
        let r = user_to_add(&add("a:b", Some("pw"), false)).expect("whole");
        assert_eq!(
            (r.name.as_str(), r.password.as_deref()),
            ("a:b", Some("pw"))
        );
        let r = user_to_add(&add("certonly", None, true)).expect("no password");
        assert_eq!((r.name.as_str(), r.password), ("certonly", None));
        assert!(user_to_add(&add(":pw", None, false)).is_err());
    }

    #[test]
    fn role_text_lists_reads_and_writes() {
        let p = |kind, key: &str, end: Option<&str>, prefix| Permission {
            permission: kind,
            key: key.into(),
            range_end: end.map(str::to_owned),
            prefix,
        };
        let r = RoleInfo {
            name: "app".into(),
            permissions: vec![
                p(PermissionKind::Read, "a", Some("c"), false),
                p(PermissionKind::Readwrite, "app/", None, true),
                p(PermissionKind::Write, "k\n", None, false),
                p(PermissionKind::Read, "", None, true),
            ],
        };
        assert_eq!(
            role_text(&r),
            "Role app\nKV Read:\n\t[a, c)\n\tprefix app/\n\tevery key (prefix \"\")\n\
             KV Write:\n\tprefix app/\n\tk\\n\n"
        );
    }

    #[test]
    fn user_text_names_the_roles() {
        let u = UserInfo {
            name: "bob".into(),
            roles: vec!["a".into(), "b".into()],
            has_password: true,
        };
        assert_eq!(user_text(&u), "User: bob\nRoles: a b");
        assert_eq!(lines(&[]), "");
        assert_eq!(lines(&["x".into(), "y".into()]), "x\ny\n");
    }
}
