-- Queue entries left `Running` by an earlier jobq, which kept a taken entry (as apalis-postgres
-- does) until the attempt ended. jobq now deletes an entry when a worker takes it, so none is
-- ever `Running` again; an old one would keep its attempt from ever being rescued: the rescue
-- skips an attempt whose task id still has an entry (normally a successor waiting to be taken),
-- and no fetch takes a `Running` entry. What the entry said (the attempt runs, on which worker)
-- is on the status row: an attempt whose worker lives finishes as before, one whose worker is
-- gone is rescued like any other.
DELETE FROM apalis.jobs WHERE status = 'Running';
