SELECT payment_id,
       upper(trim(person_id)) || '|' || subsidy_type || '|' || CAST(period AS VARCHAR) AS link_key
FROM disbursements
