//! The statuses the code knows and the ones the tables accept are the same sets: every value
//! of each enum can be stored, and a value none of them knows is refused by the table (also by
//! a view table made for a rebuild).

use domain::client::{ClientStatus, EmailStatus};
use projections::engagement::jobs::JobStatus;
use sqlx::PgPool;
use uuid::Uuid;

async fn accepts(pool: &PgPool, table: &str, status: &str) -> bool {
    let id = Uuid::new_v4();
    let sql = match table {
        "process_manager_clients" => {
            "insert into process_manager_clients (user_id, status) values ($1, $2)".to_owned()
        }
        "email_jobs" => {
            "insert into email_jobs (id, user_id, trigger_position, trigger_sequence, score,
                             status, next_attempt_at, created_at, updated_at)
                         values ($1, $1, (random() * 1e12)::bigint, 1, 10, $2, now(), now(), now())"
                .to_owned()
        }
        "emails" => "insert into emails (id, user_id, subject, text, html, status, generated_at,
                         engagement_score_at_time, generator, version)
                     values ($1, $1, 's', 't', 'h', $2, now(), 10, 'template:v1', 1)"
            .to_owned(),
        users => format!(
            "insert into {users} (id, name, email, status, created_at, updated_at, version)
             values ($1, 'n', 'e@example.com', $2, now(), now(), 1)"
        ),
    };
    sqlx::query(&sql)
        .bind(id)
        .bind(status)
        .execute(pool)
        .await
        .is_ok()
}

#[sqlx::test(migrator = "projections::db::MIGRATOR")]
async fn every_known_status_is_stored_and_no_other(pool: PgPool) {
    sqlx::query("select create_users_view('users_probe')")
        .execute(&pool)
        .await
        .unwrap();
    for table in ["users", "users_probe", "process_manager_clients"] {
        for status in ClientStatus::ALL {
            assert!(
                accepts(&pool, table, status.as_str()).await,
                "{table} {status}"
            );
        }
        assert!(
            !accepts(&pool, table, "active").await,
            "{table} takes anything"
        );
    }
    for status in EmailStatus::ALL {
        assert!(accepts(&pool, "emails", status.as_str()).await, "{status}");
    }
    assert!(!accepts(&pool, "emails", "LOST").await);
    for status in JobStatus::ALL {
        assert!(
            accepts(&pool, "email_jobs", status.as_str()).await,
            "{status}"
        );
    }
    assert!(!accepts(&pool, "email_jobs", "WAITING").await);
}
