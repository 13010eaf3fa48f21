-- Database, extension and roles for agentbus (DESIGN.md §4 "Roles").
--
-- Run by psql as a superuser connected to the maintenance database `postgres`, with
-- ON_ERROR_STOP. Used by scripts/setup-postgres.sh and agentbus.testing.PostgresServer, so the
-- dev cluster and the test clusters are set up by the same statements. Idempotent: it can run
-- on every start. psql meta-commands (\gexec, \connect) are needed because CREATE DATABASE
-- cannot run inside a DO block.
--
-- Tables and their grants are not created here: migrations (run as agentbus_owner) do that.

SET client_min_messages = warning;

-- Owner: owns the database and schema public, runs migrations and maintenance. BYPASSRLS
-- because maintenance (backfill, cutover checks, cross-agent stats) must see every row.
SELECT 'CREATE ROLE agentbus_owner'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'agentbus_owner')
\gexec
-- Re-asserted on every run so that a role whose attributes drifted is put back.
ALTER ROLE agentbus_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS;

-- App: serves agents; row-level security must apply to it, so it is neither superuser nor
-- BYPASSRLS nor a member of the owner (membership would let it SET ROLE to the owner).
SELECT 'CREATE ROLE agentbus_app'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'agentbus_app')
\gexec
ALTER ROLE agentbus_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
SELECT 'REVOKE agentbus_owner FROM agentbus_app'
WHERE pg_catalog.pg_has_role('agentbus_app', 'agentbus_owner', 'MEMBER')
\gexec

SELECT 'CREATE DATABASE agentbus OWNER agentbus_owner'
WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_database WHERE datname = 'agentbus')
\gexec
ALTER DATABASE agentbus OWNER TO agentbus_owner;
-- PUBLIC gets CONNECT and TEMPORARY by default; only our roles (and superusers) get in.
REVOKE ALL ON DATABASE agentbus FROM PUBLIC;
GRANT CONNECT ON DATABASE agentbus TO agentbus_app;

\connect agentbus
SET client_min_messages = warning;

-- CREATE EXTENSION vector needs a superuser; the UPDATE brings an existing older install up
-- to the version the server now ships (pgvector >= 0.8 is required).
CREATE EXTENSION IF NOT EXISTS vector;
ALTER EXTENSION vector UPDATE;

ALTER SCHEMA public OWNER TO agentbus_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO agentbus_app;
