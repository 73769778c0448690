"""Restore profiles: what a restoring server must hold before a dump of a given platform can restore."""

from __future__ import annotations

from dataclasses import dataclass

BUILTIN = ("vanilla", "supabase")

# Roles Supabase dumps reference (owners, grantees, policies' TO lists).
SUPABASE_ROLES = (
    "anon", "authenticated", "service_role", "authenticator", "supabase_admin", "supabase_auth_admin",
    "supabase_storage_admin", "supabase_functions_admin", "supabase_realtime_admin", "supabase_replication_admin",
    "supabase_read_only_user", "dashboard_user", "pgbouncer", "pgsodium_keyholder", "pgsodium_keyiduser",
    "pgsodium_keymaker",
)
SUPABASE_SCHEMAS = (
    "auth", "storage", "extensions", "graphql", "graphql_public", "realtime", "vault", "pgsodium",
    "pgsodium_masks", "supabase_functions", "supabase_migrations", "net", "cron", "pgbouncer",
)
# Extensions of the platform that a plain PostgreSQL server does not have: skipped and listed.
SUPABASE_EXTENSIONS = (
    "pgsodium", "pg_graphql", "supabase_vault", "pg_net", "pg_cron", "pgjwt", "pgmq", "pg_tle", "pg_stat_monitor",
    "wrappers", "index_advisor", "hypopg", "plv8", "pgroonga", "pgroonga_database", "pg_jsonschema", "pg_hashids",
    "pg_repack", "pgaudit", "pgrouting", "postgis", "postgis_topology", "postgis_raster", "vector", "timescaledb",
    "http", "pg_walinspect", "rum", "pgtap", "plpgsql_check", "safeupdate", "supautils",
)
# Platform schemas whose objects and rows belong to Supabase's services, not to the application: their
# restore errors are notices (the stand-ins below hold only what application objects refer to).
SUPABASE_PLATFORM_ERRORS = (
    r'(?:relation|schema|table|function|type) "?(?:auth|storage|realtime|vault|pgsodium|graphql|graphql_public|'
    r'supabase_functions|supabase_migrations|net|cron|extensions)\.',
    r'schema "(?:auth|storage|realtime|vault|pgsodium|pgsodium_masks|graphql|graphql_public|supabase_functions|'
    r'supabase_migrations|net|cron|pgbouncer)" ',
    r"publication .*supabase",  # event triggers are recognised by name and body, never by a pattern (stock.py)
)

_SUPABASE_BOOTSTRAP = """
DO $bootstrap$
DECLARE r text;
BEGIN
  FOREACH r IN ARRAY ARRAY[{roles}] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      EXECUTE format('CREATE ROLE %I NOLOGIN', r);
    END IF;
  END LOOP;
END
$bootstrap$;
ALTER ROLE authenticator LOGIN NOINHERIT;
ALTER ROLE service_role BYPASSRLS;
GRANT anon, authenticated, service_role TO authenticator;
{schemas}
CREATE OR REPLACE FUNCTION auth.jwt() RETURNS jsonb LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim', true), ''),
                  nullif(current_setting('request.jwt.claims', true), ''))::jsonb $$;
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.sub', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub'))::uuid $$;
CREATE OR REPLACE FUNCTION auth.role() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.role', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role'))::text $$;
CREATE OR REPLACE FUNCTION auth.email() RETURNS text LANGUAGE sql STABLE AS $$
  SELECT coalesce(nullif(current_setting('request.jwt.claim.email', true), ''),
                  (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'email'))::text $$;
GRANT USAGE ON SCHEMA auth, storage, extensions TO anon, authenticated, service_role;
"""

# Stand-ins for the platform tables application objects refer to, each made only where the dump does not
# define the table itself (a full pg_dump of a Supabase project does).
_STAND_INS = {
    "auth.users": """
CREATE TABLE IF NOT EXISTS auth.users (
  instance_id uuid, id uuid PRIMARY KEY, aud varchar(255), role varchar(255), email varchar(255),
  encrypted_password varchar(255), email_confirmed_at timestamptz, invited_at timestamptz,
  confirmation_token varchar(255), confirmation_sent_at timestamptz, recovery_token varchar(255),
  recovery_sent_at timestamptz, email_change_token_new varchar(255), email_change varchar(255),
  email_change_sent_at timestamptz, last_sign_in_at timestamptz, raw_app_meta_data jsonb,
  raw_user_meta_data jsonb, is_super_admin boolean, created_at timestamptz, updated_at timestamptz,
  phone text UNIQUE, phone_confirmed_at timestamptz, phone_change text DEFAULT '',
  phone_change_token varchar(255) DEFAULT '', phone_change_sent_at timestamptz,
  confirmed_at timestamptz GENERATED ALWAYS AS (LEAST(email_confirmed_at, phone_confirmed_at)) STORED,
  email_change_token_current varchar(255) DEFAULT '', email_change_confirm_status smallint DEFAULT 0,
  banned_until timestamptz, reauthentication_token varchar(255) DEFAULT '', reauthentication_sent_at timestamptz,
  is_sso_user boolean NOT NULL DEFAULT false, deleted_at timestamptz, is_anonymous boolean NOT NULL DEFAULT false
);
""",
    "storage.buckets": """
CREATE TABLE IF NOT EXISTS storage.buckets (
  id text PRIMARY KEY, name text NOT NULL UNIQUE, owner uuid, owner_id text, created_at timestamptz DEFAULT now(),
  updated_at timestamptz DEFAULT now(), public boolean DEFAULT false, avif_autodetection boolean DEFAULT false,
  file_size_limit bigint, allowed_mime_types text[], type text DEFAULT 'STANDARD'
);
""",
    "storage.objects": """
CREATE TABLE IF NOT EXISTS storage.objects (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(), bucket_id text, name text,
  owner uuid, owner_id text, created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now(),
  last_accessed_at timestamptz DEFAULT now(), metadata jsonb, path_tokens text[], version text,
  user_metadata jsonb, level integer
);
""",
}


@dataclass(frozen=True)
class Profile:
    """What is done to a fresh restoring server before a dump is restored into it."""

    name: str = "vanilla"
    base: str = "vanilla"  # vanilla or supabase
    bootstrap_sql: str = ""  # the user's own SQL, run after the base's
    tolerated_errors: tuple[str, ...] = ()
    skip_extensions: tuple[str, ...] = ()

    @property
    def supabase(self) -> bool:
        return self.base == "supabase"

    def skipped_extensions(self) -> tuple[str, ...]:
        return (SUPABASE_EXTENSIONS if self.supabase else ()) + self.skip_extensions

    def bootstrap(self, defined: frozenset[str] | set[str] = frozenset()) -> list[str]:
        """SQL scripts to run, in order, as the superuser in the restore's database.

        ``defined`` holds the tables (``schema.name``) the dump creates itself: no stand-in is made for them.
        """
        scripts = []
        if self.supabase:
            roles = ", ".join(f"'{r}'" for r in SUPABASE_ROLES)
            schemas = "\n".join(f"CREATE SCHEMA IF NOT EXISTS {s};" for s in SUPABASE_SCHEMAS)
            scripts.append(_SUPABASE_BOOTSTRAP.format(roles=roles, schemas=schemas)
                           + "".join(sql for table, sql in _STAND_INS.items() if table not in defined))
        if self.bootstrap_sql.strip():
            scripts.append(self.bootstrap_sql)
        return scripts

    def tolerated(self) -> tuple[str, ...]:
        """Error patterns a restore under this profile tolerates (reported, but not harmful)."""
        own = self.tolerated_errors
        skipped = self.skipped_extensions()
        if skipped:
            names = "|".join(skipped)
            own += (rf'extension "(?:{names})" (?:is not available|does not exist)',
                    rf"could not open extension control file .*/(?:{names})\.control")
        if self.supabase:
            own += SUPABASE_PLATFORM_ERRORS
        return own


def builtin(name: str) -> Profile:
    return Profile(name=name, base=name if name in BUILTIN else "vanilla")


def detect(roles_used: set[str], tables: set[str]) -> tuple[str, str]:
    """("supabase", why) when a dump is unmistakably Supabase's, else ("vanilla", "").

    Unmistakable: two or more of the platform's own roles are referenced (owners, grants, policies),
    or its auth and storage schemas hold tables together with one such role.
    """
    platform = sorted(r for r in roles_used if r in SUPABASE_ROLES)
    schemas = sorted({t.rsplit("/", 1)[-1].split(".", 1)[0] for t in tables} & {"auth", "storage"})
    if len(platform) >= 2 or (platform and len(schemas) == 2):
        why = f"the dump references Supabase's role(s) {', '.join(platform)}"
        if schemas:
            why += f" and holds tables in its schema(s) {', '.join(schemas)}"
        return "supabase", why
    return "vanilla", ""
